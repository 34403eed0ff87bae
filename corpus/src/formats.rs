//! Each format's lines. Every function draws only from the generator's own
//! random stream, so a seed gives the same bytes everywhere.

use chrono::{DateTime, Utc};
use rand::RngExt as _;
use rand_pcg::Pcg64Mcg;

use crate::vocab::{self, any, hex, ip, skewed};
use crate::{Event, Format, Level};

/// What a format remembers between events: the blocks a data node is
/// working on, process ids, threads, a heap that fills up.
#[derive(Debug, Clone)]
pub struct State {
    /// HDFS blocks in flight: a block shows up in several lines.
    blocks: Vec<i64>,
    sshd_pids: Vec<u32>,
    host: String,
    heap_percent: u32,
    session: u32,
}

impl State {
    pub fn new(rng: &mut Pcg64Mcg) -> State {
        State {
            blocks: (0..6).map(|_| block_id(rng)).collect(),
            sshd_pids: (0..4).map(|_| rng.random_range(1_000..60_000)).collect(),
            host: format!(
                "ip-10-{}-{}-{}",
                rng.random_range(0..32),
                rng.random_range(0..256),
                rng.random_range(2..250)
            ),
            heap_percent: 40,
            session: rng.random_range(1..500),
        }
    }
}

fn block_id(rng: &mut Pcg64Mcg) -> i64 {
    // Real ids are random 64-bit numbers, often negative.
    rng.random::<i64>()
}

/// A needle for `format`: a token (or id) that no other line holds.
pub fn needle(format: Format, rng: &mut Pcg64Mcg, n: u64) -> String {
    // The count keeps needles of one generator distinct; 64 random bits
    // keep them apart from every other value in the stream.
    let bits = rng.random::<u64>() ^ n.rotate_left(40);
    match format {
        Format::Hdfs => format!("blk_{}", bits as i64),
        Format::Json | Format::Logfmt => format!("{bits:016x}{:016x}", rng.random::<u64>()),
        Format::Syslog => format!("SHA256{bits:016x}"),
        Format::Access => format!("ord{bits:016x}"),
        Format::Java => format!("req{bits:016x}"),
        Format::Raw => format!("obj{bits:016x}"),
    }
}

fn time(ts: i64) -> DateTime<Utc> {
    DateTime::from_timestamp_nanos(ts)
}

/// The level of an ordinary event: mostly info, some debug and warn, a few
/// errors, rarely fatal.
fn level(rng: &mut Pcg64Mcg) -> Level {
    match rng.random_range(0..1000) {
        0..=99 => Level::Debug,
        100..=859 => Level::Info,
        860..=959 => Level::Warn,
        960..=998 => Level::Error,
        _ => Level::Fatal,
    }
}

pub fn write(
    format: Format,
    rng: &mut Pcg64Mcg,
    state: &mut State,
    ts: i64,
    needle: Option<&str>,
) -> Event {
    let (lines, level) = match format {
        Format::Syslog => syslog(rng, state, ts, needle),
        Format::Hdfs => hdfs(rng, state, ts, needle),
        Format::Access => access(rng, ts, needle),
        Format::Java => java(rng, state, ts, needle),
        Format::Json => json(rng, ts, needle),
        Format::Logfmt => logfmt(rng, ts, needle),
        Format::Raw => raw(rng, ts, needle),
    };
    Event {
        lines,
        level,
        needle: None,
    }
}

fn one(line: String, level: Level) -> (Vec<Vec<u8>>, Level) {
    (vec![line.into_bytes()], level)
}

fn syslog(
    rng: &mut Pcg64Mcg,
    state: &mut State,
    ts: i64,
    needle: Option<&str>,
) -> (Vec<Vec<u8>>, Level) {
    let head = format!("{} {}", time(ts).format("%b %e %H:%M:%S"), state.host);
    let pid = *any(rng, &state.sshd_pids);
    let port = rng.random_range(32_768..61_000);
    if let Some(needle) = needle {
        let user = skewed(rng, &vocab::USERS);
        return one(
            format!(
                "{head} sshd[{pid}]: Accepted publickey for {user} from {} port {port} ssh2: ED25519 {needle}",
                ip(rng)
            ),
            Level::Info,
        );
    }
    let line = match rng.random_range(0..100) {
        0..=24 => {
            let user = skewed(rng, &vocab::USERS);
            (
                format!(
                    "{head} sshd[{pid}]: Accepted publickey for {user} from {} port {port} ssh2: ED25519 SHA256{}",
                    ip(rng),
                    hex(rng, 16)
                ),
                Level::Info,
            )
        }
        25..=39 => {
            let guess = skewed(rng, &vocab::GUESSES);
            (
                format!(
                    "{head} sshd[{pid}]: Failed password for invalid user {guess} from {} port {port} ssh2",
                    vocab::outside_ip(rng)
                ),
                Level::Warn,
            )
        }
        40..=44 => (
            format!(
                "{head} sshd[{pid}]: Failed password for root from {} port {port} ssh2",
                vocab::outside_ip(rng)
            ),
            Level::Warn,
        ),
        45..=49 => (
            format!(
                "{head} sshd[{pid}]: error: kex_exchange_identification: Connection closed by remote host"
            ),
            Level::Error,
        ),
        50..=59 => {
            let user = skewed(rng, &vocab::USERS);
            state.session += 1;
            (
                format!(
                    "{head} systemd-logind[812]: New session {} of user {user}.",
                    state.session
                ),
                Level::Info,
            )
        }
        60..=69 => {
            let command = skewed(rng, &vocab::CRON_COMMANDS);
            (
                format!(
                    "{head} CRON[{}]: (root) CMD ({command})",
                    rng.random_range(10_000..60_000)
                ),
                Level::Info,
            )
        }
        70..=79 => {
            let unit = skewed(rng, &vocab::UNITS);
            let verb = *any(rng, &["Started", "Stopped", "Reloaded", "Starting"]);
            (format!("{head} systemd[1]: {verb} {unit}."), Level::Info)
        }
        80..=84 => {
            let unit = skewed(rng, &vocab::UNITS);
            (
                format!(
                    "{head} systemd[1]: {unit}: Main process exited, code=exited, status=1/FAILURE"
                ),
                Level::Error,
            )
        }
        85..=92 => {
            let nic = any(rng, &vocab::INTERFACES);
            let uptime = ts as f64 / 1e9 % 1_000_000.0;
            (
                format!(
                    "{head} kernel: [{uptime:.6}] {nic}: renamed from veth{}",
                    hex(rng, 7)
                ),
                Level::Info,
            )
        }
        93..=96 => {
            let uptime = ts as f64 / 1e9 % 1_000_000.0;
            (
                format!(
                    "{head} kernel: [{uptime:.6}] Out of memory: Killed process {} (java) total-vm:{}kB, anon-rss:{}kB",
                    rng.random_range(1_000..60_000),
                    rng.random_range(4_000_000..9_000_000),
                    rng.random_range(2_000_000..4_000_000)
                ),
                Level::Error,
            )
        }
        _ => {
            let user = skewed(rng, &vocab::USERS);
            (
                format!(
                    "{head} sudo[{}]: {user} : TTY=pts/{} ; PWD=/home/{user} ; USER=root ; COMMAND=/usr/bin/systemctl restart nginx",
                    rng.random_range(1_000..60_000),
                    rng.random_range(0..8)
                ),
                Level::Info,
            )
        }
    };
    one(line.0, line.1)
}

fn hdfs(
    rng: &mut Pcg64Mcg,
    state: &mut State,
    ts: i64,
    needle: Option<&str>,
) -> (Vec<Vec<u8>>, Level) {
    let head = format!(
        "{} {}",
        time(ts).format("%y%m%d %H%M%S"),
        rng.random_range(1..4000)
    );
    if rng.random_ratio(1, 4) {
        let slot = rng.random_range(0..state.blocks.len());
        state.blocks[slot] = block_id(rng);
    }
    let block = match needle {
        Some(needle) => needle.to_string(),
        None => format!("blk_{}", any(rng, &state.blocks)),
    };
    let (a, b) = (ip(rng), ip(rng));
    let (line, level) = match rng.random_range(0..100) {
        0..=29 => (
            format!(
                "{head} INFO dfs.DataNode$PacketResponder: PacketResponder {} for block {block} terminating",
                rng.random_range(0..3)
            ),
            Level::Info,
        ),
        30..=49 => (
            format!(
                "{head} INFO dfs.DataNode$DataXceiver: Receiving block {block} src: /{a}:{} dest: /{b}:50010",
                rng.random_range(30_000..60_000)
            ),
            Level::Info,
        ),
        50..=64 => (
            format!(
                "{head} INFO dfs.FSNamesystem: BLOCK* NameSystem.addStoredBlock: blockMap updated: {a}:50010 is added to {block} size {}",
                *skewed(rng, &[67_108_864u64, 3_538_944, 91_178, 11_977])
            ),
            Level::Info,
        ),
        65..=74 => (
            format!(
                "{head} INFO dfs.DataNode$PacketResponder: Received block {block} of size {} from /{a}",
                *skewed(rng, &[67_108_864u64, 3_538_944])
            ),
            Level::Info,
        ),
        75..=84 => (
            format!(
                "{head} INFO dfs.FSNamesystem: BLOCK* NameSystem.allocateBlock: /user/root/rand/_temporary/_task_200811092030_0001_m_{:06}_0/part-{:05}. {block}",
                rng.random_range(0..2000),
                rng.random_range(0..2000)
            ),
            Level::Info,
        ),
        85..=89 => (
            format!(
                "{head} INFO dfs.FSDataset: Deleting block {block} file /mnt/hadoop/dfs/data/current/subdir{}/{block}",
                rng.random_range(0..64)
            ),
            Level::Info,
        ),
        90..=95 => (
            format!(
                "{head} WARN dfs.DataNode$DataXceiver: {a}:50010:Got exception while serving {block} to /{b}:"
            ),
            Level::Warn,
        ),
        96..=98 => (
            format!(
                "{head} INFO dfs.FSNamesystem: BLOCK* NameSystem.delete: {block} is added to invalidSet of {a}:50010"
            ),
            Level::Info,
        ),
        _ => (
            format!(
                "{head} ERROR dfs.DataNode: {a}:50010:DataXceiver: java.io.IOException: Block {block} is valid, and cannot be written to."
            ),
            Level::Error,
        ),
    };
    one(line, level)
}

fn access(rng: &mut Pcg64Mcg, ts: i64, needle: Option<&str>) -> (Vec<Vec<u8>>, Level) {
    let when = time(ts).format("%d/%b/%Y:%H:%M:%S +0000");
    let client = if rng.random_ratio(1, 5) {
        vocab::outside_ip(rng)
    } else {
        ip(rng)
    };
    let method = *skewed(rng, &["GET", "POST", "GET", "PUT", "DELETE", "HEAD"]);
    let path = match needle {
        Some(needle) => format!("/api/v1/orders/{needle}"),
        None => skewed(rng, &vocab::HTTP_PATHS)
            .replace("{id}", &rng.random_range(1..100_000).to_string())
            .replace("{word}", any::<&str>(rng, &vocab::SEARCH_WORDS)),
    };
    let status = *skewed(rng, &[200u16, 304, 404, 201, 302, 500, 503, 401, 204, 502]);
    let bytes = if status == 304 || status == 204 {
        0
    } else {
        rng.random_range(120..48_000)
    };
    let user = if rng.random_ratio(1, 4) {
        skewed(rng, &vocab::USERS).to_string()
    } else {
        "-".into()
    };
    let referer = if rng.random_ratio(1, 3) {
        "\"https://shop.example.com/\""
    } else {
        "\"-\""
    };
    let agent = skewed(rng, &vocab::AGENTS);
    let level = match status {
        500..=599 => Level::Error,
        400..=499 => Level::Warn,
        _ => Level::Info,
    };
    one(
        format!(
            "{client} - {user} [{when}] \"{method} {path} HTTP/1.1\" {status} {bytes} {referer} \"{agent}\" {:.3}",
            rng.random_range(1..2_000) as f64 / 1000.0
        ),
        level,
    )
}

fn java_frame(rng: &mut Pcg64Mcg) -> String {
    let package = skewed(rng, &vocab::JAVA_PACKAGES);
    let class = skewed(rng, &vocab::JAVA_CLASSES);
    let method = skewed(rng, &vocab::JAVA_METHODS);
    format!(
        "\tat {package}.{class}.{method}({class}.java:{})",
        rng.random_range(20..900)
    )
}

fn java(
    rng: &mut Pcg64Mcg,
    state: &mut State,
    ts: i64,
    needle: Option<&str>,
) -> (Vec<Vec<u8>>, Level) {
    let when = time(ts)
        .format("%Y-%m-%d %H:%M:%S%.3f")
        .to_string()
        .replacen('.', ",", 1);
    let thread = format!(
        "pool-{}-thread-{}",
        rng.random_range(1..4),
        rng.random_range(1..17)
    );
    let package = skewed(rng, &vocab::JAVA_PACKAGES);
    let class = skewed(rng, &vocab::JAVA_CLASSES);
    let service = skewed(rng, &vocab::SERVICES);
    let request = match needle {
        Some(needle) => needle.to_string(),
        None => format!("req{}", hex(rng, 16)),
    };
    state.heap_percent = (state.heap_percent + rng.random_range(0..3)).min(99);
    let level = if needle.is_some() {
        Level::Info
    } else {
        level(rng)
    };
    let word = match level {
        Level::Trace => "TRACE",
        Level::Debug => "DEBUG",
        Level::Info => "INFO",
        Level::Warn => "WARN",
        Level::Error => "ERROR",
        Level::Fatal => "FATAL",
    };
    let head = format!("{when} {word:<5} [{thread}] {package}.{class} -");
    let message = match level {
        Level::Trace | Level::Debug => format!(
            "cache lookup for {service} key {} took {} us",
            hex(rng, 8),
            rng.random_range(3..900)
        ),
        Level::Info if needle.is_some() => format!(
            "processed {service} request {request} in {} ms",
            rng.random_range(1..800)
        ),
        Level::Info => match rng.random_range(0..4) {
            0 => format!(
                "processed {service} request {request} in {} ms",
                rng.random_range(1..800)
            ),
            1 => format!(
                "committed batch {} of {} records to {service}",
                rng.random_range(1..5000),
                rng.random_range(1..500)
            ),
            2 => format!(
                "heap usage {}% after gc, {} ms pause",
                state.heap_percent,
                rng.random_range(1..120)
            ),
            _ => format!(
                "connected to {service}-db-{} in {} ms",
                rng.random_range(0..4),
                rng.random_range(1..50)
            ),
        },
        Level::Warn => match rng.random_range(0..3) {
            0 => format!(
                "slow {service} request {request}: {} ms over budget",
                rng.random_range(100..5000)
            ),
            1 => format!(
                "retrying {service} call (attempt {} of 5)",
                rng.random_range(2..6)
            ),
            _ => format!("heap usage {}% above threshold", state.heap_percent.max(85)),
        },
        Level::Error | Level::Fatal => format!("failed to process {service} request {request}"),
    };
    let mut lines = vec![format!("{head} {message}").into_bytes()];
    // Most errors come with a stack trace, some with a cause.
    if level >= Level::Error && !rng.random_ratio(1, 4) {
        let (exception, text) = *skewed(rng, &vocab::EXCEPTIONS);
        let text = text.replace("{n}", &rng.random_range(8..65).to_string());
        lines.push(format!("{exception}: {text}").into_bytes());
        for _ in 0..rng.random_range(3..9) {
            lines.push(java_frame(rng).into_bytes());
        }
        for frame in &vocab::FRAMEWORK_FRAMES[..rng.random_range(1..4)] {
            lines.push(format!("\tat {frame}").into_bytes());
        }
        if rng.random_ratio(1, 2) {
            let (cause, text) = *any(rng, &vocab::EXCEPTIONS);
            let text = text.replace("{n}", &rng.random_range(8..65).to_string());
            lines.push(format!("Caused by: {cause}: {text}").into_bytes());
            for _ in 0..rng.random_range(1..4) {
                lines.push(java_frame(rng).into_bytes());
            }
            lines.push(format!("\t... {} more", rng.random_range(4..30)).into_bytes());
        }
        if exception.ends_with("OutOfMemoryError") {
            state.heap_percent = 40;
        }
    }
    (lines, level)
}

fn trace_id(rng: &mut Pcg64Mcg) -> String {
    hex(rng, 32)
}

/// Fields shared by the JSON and logfmt services: (level, message,
/// further key/value pairs, numbers unquoted).
fn structured(rng: &mut Pcg64Mcg) -> (Level, String, Vec<(&'static str, String, bool)>) {
    let level = level(rng);
    let service = skewed(rng, &vocab::SERVICES);
    let user = skewed(rng, &vocab::USERS);
    let status = match level {
        Level::Error | Level::Fatal => *any(rng, &[500u16, 502, 503]),
        Level::Warn => *any(rng, &[404u16, 409, 429]),
        _ => *skewed(rng, &[200u16, 201, 204]),
    };
    let path = skewed(rng, &vocab::HTTP_PATHS)
        .replace("{id}", &rng.random_range(1..100_000).to_string())
        .replace("{word}", any::<&str>(rng, &vocab::SEARCH_WORDS));
    let message = match level {
        Level::Trace | Level::Debug => format!("cache hit for {service}"),
        Level::Info => "request completed".to_string(),
        Level::Warn => format!("upstream {service} slow"),
        Level::Error => format!("upstream {service} failed"),
        Level::Fatal => "cannot reach the database, shutting down".to_string(),
    };
    let fields = vec![
        (
            "method",
            skewed(rng, &["GET", "POST", "PUT", "DELETE"]).to_string(),
            false,
        ),
        ("path", path, false),
        ("status", status.to_string(), true),
        (
            "duration_ms",
            format!("{:.1}", rng.random_range(2..40_000) as f64 / 10.0),
            true,
        ),
        ("user", user.to_string(), false),
        ("service", service.to_string(), false),
    ];
    (level, message, fields)
}

fn json(rng: &mut Pcg64Mcg, ts: i64, needle: Option<&str>) -> (Vec<Vec<u8>>, Level) {
    let (level, message, fields) = structured(rng);
    let trace = needle.map_or_else(|| trace_id(rng), str::to_string);
    // Services disagree on the key of the level.
    let level_key = *skewed(rng, &["level", "severity", "lvl"]);
    let mut out = format!(
        "{{\"ts\":\"{}\",\"{level_key}\":\"{}\",\"msg\":\"{message}\",\"trace_id\":\"{trace}\",\"span_id\":\"{}\"",
        time(ts).format("%Y-%m-%dT%H:%M:%S%.3fZ"),
        level.name(),
        hex(rng, 16)
    );
    for (key, value, number) in fields {
        if number {
            out += &format!(",\"{key}\":{value}");
        } else {
            out += &format!(",\"{key}\":\"{value}\"");
        }
    }
    out.push('}');
    one(out, level)
}

fn logfmt(rng: &mut Pcg64Mcg, ts: i64, needle: Option<&str>) -> (Vec<Vec<u8>>, Level) {
    let (level, message, fields) = structured(rng);
    let trace = needle.map_or_else(|| trace_id(rng), str::to_string);
    let mut out = format!(
        "ts={} level={} msg=\"{message}\" trace_id={trace} span_id={}",
        time(ts).format("%Y-%m-%dT%H:%M:%S%.3fZ"),
        level.name(),
        hex(rng, 16)
    );
    for (key, value, _) in fields {
        if value.contains([' ', '"', '=']) {
            out += &format!(" {key}=\"{}\"", value.replace('"', "\\\""));
        } else {
            out += &format!(" {key}={value}");
        }
    }
    one(out, level)
}

const BASE64: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";

fn raw(rng: &mut Pcg64Mcg, ts: i64, needle: Option<&str>) -> (Vec<Vec<u8>>, Level) {
    let when = time(ts).format("%Y-%m-%dT%H:%M:%S%.6fZ");
    let object = needle.map_or_else(|| format!("obj{}", hex(rng, 16)), str::to_string);
    let mut line: Vec<u8> = Vec::new();
    let level = match rng.random_range(0..10) {
        0..=3 => {
            // A request body dumped in base64: long, one token after another.
            line.extend_from_slice(format!("{when} DEBUG dump object={object} body=").as_bytes());
            // Mostly short bodies, now and then one of several KiB.
            let len = if rng.random_ratio(1, 10) {
                rng.random_range(3_000..9_000)
            } else {
                rng.random_range(60..600)
            };
            line.extend((0..len).map(|_| BASE64[rng.random_range(0..64)]));
            Level::Debug
        }
        4..=5 => {
            // A hex dump of a frame, with a NUL-padded tail as some agents write.
            line.extend_from_slice(format!("{when} TRACE frame object={object} bytes:").as_bytes());
            for _ in 0..rng.random_range(16..128) {
                line.extend_from_slice(format!(" {:02x}", rng.random::<u8>()).as_bytes());
            }
            line.extend_from_slice(b"\t\x00\x00");
            Level::Trace
        }
        6..=7 => {
            // Coloured output from a tool that thought it had a terminal.
            let (colour, word, level) = *any(
                rng,
                &[
                    ("32", "ok", Level::Info),
                    ("33", "slow", Level::Warn),
                    ("31", "failed", Level::Error),
                ],
            );
            line.extend_from_slice(
                format!(
                    "\x1b[1m{when}\x1b[0m \x1b[{colour}m{word}\x1b[0m\tobject={object}\tsize={}\r",
                    rng.random_range(1..1 << 20)
                )
                .as_bytes(),
            );
            level
        }
        8 => {
            // A name that is not UTF-8 (a Latin-1 file name), quoted raw.
            line.extend_from_slice(
                format!("{when} INFO upload object={object} name=\"r").as_bytes(),
            );
            line.extend_from_slice(&[0xe9, b's', b'u', b'm', 0xe9]);
            line.extend_from_slice(
                format!(".pdf\" size={}", rng.random_range(1_000..9_000_000)).as_bytes(),
            );
            Level::Info
        }
        _ => {
            // A very long SQL statement.
            line.extend_from_slice(format!("{when} INFO slow query object={object} ms={} sql=SELECT id, name, price FROM items WHERE id IN (", rng.random_range(500..20_000)).as_bytes());
            let count = if rng.random_ratio(1, 10) {
                rng.random_range(500..1500)
            } else {
                rng.random_range(5..60)
            };
            let ids: Vec<String> = (0..count)
                .map(|_| rng.random_range(1..10_000_000).to_string())
                .collect();
            line.extend_from_slice(ids.join(", ").as_bytes());
            line.extend_from_slice(b") ORDER BY price DESC");
            Level::Info
        }
    };
    (vec![line], level)
}

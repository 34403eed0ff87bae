//! `sluice bus status` and `sluice bus dump`: operator views of either bus.
//! An embedded bus is opened read-only, so both work while `sluice up` runs.

use std::collections::BTreeMap;
use std::io::Write;
use std::time::Duration;

use anyhow::Context;
use clap::{Args, Subcommand};
use prost::Message as _;
use serde_json::{Map, Value, json};
use sluice_broker::{BusConfig, BusStatus, BusUrl, Message, Position};
use sluice_schema::pb::{ClusterEvent, EventKind, Layout, LogChunk, Stream};
use sluice_schema::time::rfc3339_nanos;
use sluice_schema::topics;

use crate::shared::args::DataDirArg;
use crate::shared::client;

#[derive(Args, Debug)]
pub struct StatusArgs {
    #[command(flatten)]
    pub dir: DataDirArg,
    /// The bus [default: the data directory's]
    #[arg(long)]
    pub bus: Option<BusUrl>,
    /// Also report this consumer group (repeatable): for Kafka brokers that
    /// do not list groups, such as tansu.
    #[arg(long = "group", value_name = "GROUP")]
    pub groups: Vec<String>,
    #[arg(long)]
    pub json: bool,
}

#[derive(Args, Debug)]
pub struct DumpArgs {
    #[command(flatten)]
    pub dir: DataDirArg,
    #[arg(long)]
    pub bus: Option<BusUrl>,
    /// `sluice.logs`, `sluice.events`, or any topic (printed raw).
    #[arg(long)]
    pub topic: String,
    /// Start at the oldest record and stop at the end (unless --follow);
    /// without it, print records arriving from now on.
    #[arg(long)]
    pub from_beginning: bool,
    /// Keep waiting for new records.
    #[arg(long)]
    pub follow: bool,
    /// Stop after printing this many log lines or events.
    #[arg(long)]
    pub max: Option<u64>,
    /// One JSON object per log line or event.
    #[arg(long)]
    pub json: bool,
}

async fn open(
    dir: &DataDirArg,
    bus: Option<&BusUrl>,
) -> anyhow::Result<std::sync::Arc<dyn sluice_broker::Bus>> {
    let url = client::bus_url(bus, &dir.data_dir)?;
    sluice_broker::open_for_inspection(&BusConfig::new(url.clone()))
        .await
        .with_context(|| format!("failed to open bus {url}"))
}

pub async fn status(args: StatusArgs) -> anyhow::Result<()> {
    let bus = open(&args.dir, args.bus.as_ref()).await?;
    let groups: Vec<&str> = args.groups.iter().map(String::as_str).collect();
    let status = bus.status(&groups).await?;
    let mut out = std::io::stdout().lock();
    if args.json {
        writeln!(out, "{}", serde_json::to_string(&status)?)?;
    } else {
        write_status(&mut out, &status)?;
    }
    Ok(())
}

fn write_status(out: &mut impl Write, status: &BusStatus) -> std::io::Result<()> {
    writeln!(out, "bus {}", status.url)?;
    writeln!(
        out,
        "{:<24} {:>9} {:>14} {:>14} {:>12}",
        "TOPIC", "PARTITION", "START", "END", "BYTES"
    )?;
    for topic in &status.topics {
        for p in &topic.partitions {
            let bytes = p.bytes.map_or("-".to_string(), |b| b.to_string());
            writeln!(
                out,
                "{:<24} {:>9} {:>14} {:>14} {:>12}",
                topic.topic, p.partition, p.start_offset, p.end_offset, bytes
            )?;
        }
    }
    writeln!(out, "{:<24} {:>9} {:>14}", "GROUP", "TOPICS", "LAG")?;
    for group in &status.groups {
        let topics: std::collections::BTreeSet<&str> =
            group.offsets.iter().map(|o| o.topic.as_str()).collect();
        writeln!(
            out,
            "{:<24} {:>9} {:>14}",
            group.group,
            topics.len(),
            group.lag
        )?;
    }
    Ok(())
}

pub async fn dump(args: DumpArgs) -> anyhow::Result<()> {
    let bus = open(&args.dir, args.bus.as_ref()).await?;
    let status = bus.status(&[]).await?;
    let ends: BTreeMap<u32, (u64, u64)> = status
        .topics
        .iter()
        .filter(|t| t.topic == args.topic)
        .flat_map(|t| {
            t.partitions
                .iter()
                .map(|p| (p.partition, (p.start_offset, p.end_offset)))
        })
        .collect();
    if ends.is_empty() && !args.follow && args.from_beginning {
        return Ok(());
    }
    let group = format!("sluice-dump-{}", std::process::id());
    let mut consumer = bus.consumer(&group, &[&args.topic]).await?;
    let mut out = std::io::BufWriter::new(std::io::stdout().lock());
    let mut printed = 0u64;
    let mut seeked = false;
    // Next offset still to print per partition, to know when the end is reached.
    let mut next: BTreeMap<u32, u64> = ends.iter().map(|(p, (start, _))| (*p, *start)).collect();
    loop {
        if !args.from_beginning && !seeked {
            let assigned = consumer.assignment()?;
            for tp in &assigned {
                let end = ends.get(&tp.partition).map_or(0, |e| e.1);
                consumer
                    .seek(&Position::new(&tp.topic, tp.partition, end))
                    .await?;
            }
            seeked = !assigned.is_empty();
        }
        let batch = consumer.poll(1024, Duration::from_millis(500)).await?;
        for message in &batch {
            let end = ends.get(&message.partition).map_or(0, |e| e.1);
            if !args.from_beginning && message.offset < end {
                continue;
            }
            let budget = args.max.map_or(usize::MAX, |max| (max - printed) as usize);
            printed += write_message(&mut out, message, args.json, budget)? as u64;
            next.insert(message.partition, message.offset + 1);
            if args.max.is_some_and(|max| printed >= max) {
                return Ok(out.flush()?);
            }
        }
        out.flush()?;
        let at_end = next
            .iter()
            .all(|(p, n)| *n >= ends.get(p).map_or(0, |e| e.1));
        if args.from_beginning && !args.follow && at_end {
            return Ok(());
        }
    }
}

/// Prints a record (at most `budget` lines of it); returns how many lines or
/// events it printed.
fn write_message(
    out: &mut impl Write,
    message: &Message,
    json: bool,
    budget: usize,
) -> anyhow::Result<usize> {
    match message.topic.as_str() {
        topics::LOGS => match LogChunk::decode(message.payload.clone()) {
            Ok(chunk) => write_chunk(out, &chunk, json, budget),
            Err(e) => write_undecodable(out, message, "LogChunk", &e, json).map(|()| 1),
        },
        topics::EVENTS => match ClusterEvent::decode(message.payload.clone()) {
            Ok(event) => write_event(out, &event, json).map(|()| 1),
            Err(e) => write_undecodable(out, message, "ClusterEvent", &e, json).map(|()| 1),
        },
        _ => {
            let object = json!({
                "topic": message.topic, "partition": message.partition, "offset": message.offset,
                "timestamp_ms": message.timestamp_ms,
                "key": String::from_utf8_lossy(&message.key),
                "payload": String::from_utf8_lossy(&message.payload),
            });
            if json {
                writeln!(out, "{object}")?;
            } else {
                writeln!(
                    out,
                    "{}/{}@{} {}",
                    message.topic,
                    message.partition,
                    message.offset,
                    String::from_utf8_lossy(&message.payload)
                )?;
            }
            Ok(1)
        }
    }
}

fn write_undecodable(
    out: &mut impl Write,
    message: &Message,
    what: &str,
    error: &prost::DecodeError,
    json: bool,
) -> anyhow::Result<()> {
    let problem = format!("not a {what}: {error}");
    if json {
        let object = json!({"topic": message.topic, "partition": message.partition, "offset": message.offset, "error": problem});
        writeln!(out, "{object}")?;
    } else {
        writeln!(
            out,
            "{}/{}@{}: {problem}",
            message.topic, message.partition, message.offset
        )?;
    }
    Ok(())
}

fn stream_name(stream: i32) -> &'static str {
    match Stream::try_from(stream) {
        Ok(Stream::Stdout) => "stdout",
        Ok(Stream::Stderr) => "stderr",
        _ => "unknown",
    }
}

fn layout_name(layout: i32) -> String {
    Layout::try_from(layout).map_or("unknown".into(), |l| {
        l.as_str_name().trim_start_matches("LAYOUT_").to_lowercase()
    })
}

fn kind_name(kind: i32) -> String {
    EventKind::try_from(kind).map_or(format!("unknown_{kind}"), |k| {
        k.as_str_name()
            .trim_start_matches("EVENT_KIND_")
            .to_lowercase()
    })
}

fn write_chunk(
    out: &mut impl Write,
    chunk: &LogChunk,
    json: bool,
    budget: usize,
) -> anyhow::Result<usize> {
    let source = chunk.source.clone().unwrap_or_default();
    let lines = &chunk.lines[..chunk.lines.len().min(budget)];
    for line in lines {
        let text = String::from_utf8_lossy(&line.text);
        if !json {
            writeln!(
                out,
                "{} {} {}/{}[{}] {} {}: {text}",
                rfc3339_nanos(line.ts_unix_nanos),
                source.host,
                source.job,
                source.instance,
                source.run,
                source.process,
                stream_name(source.stream)
            )?;
            continue;
        }
        let mut object = Map::new();
        object.insert(
            "source_id".into(),
            json!(format!("{:016x}", source.source_id)),
        );
        object.insert("offset".into(), json!(line.offset));
        object.insert("ts".into(), json!(rfc3339_nanos(line.ts_unix_nanos)));
        for (key, value) in [
            ("host", &source.host),
            ("job", &source.job),
            ("task_id", &source.task_id),
            ("process", &source.process),
            ("path", &source.path),
        ] {
            object.insert(key.into(), json!(value));
        }
        object.insert("instance".into(), json!(source.instance));
        object.insert("run".into(), json!(source.run));
        object.insert("stream".into(), json!(stream_name(source.stream)));
        object.insert("layout".into(), json!(layout_name(source.layout)));
        object.insert("labels".into(), json!(source.labels));
        object.insert("line".into(), json!(text));
        if std::str::from_utf8(&line.text).is_err() {
            object.insert("invalid_utf8".into(), json!(true));
        }
        for (flag, set) in [
            ("partial", line.partial),
            ("truncated", line.truncated),
            ("unterminated", line.unterminated),
        ] {
            if set {
                object.insert(flag.into(), json!(true));
            }
        }
        writeln!(out, "{}", Value::Object(object))?;
    }
    Ok(lines.len())
}

fn write_event(out: &mut impl Write, event: &ClusterEvent, json: bool) -> anyhow::Result<()> {
    let kind = kind_name(event.kind);
    if json {
        let object = json!({
            "id": event.id, "ts": rfc3339_nanos(event.ts_unix_nanos), "kind": kind, "job": event.job,
            "instance": event.instance, "task_id": event.task_id, "run": event.run, "host": event.host,
            "actor": event.actor, "reason": event.reason, "message": event.message, "attributes": event.attributes,
        });
        writeln!(out, "{object}")?;
    } else {
        let instance = event.instance.map(|i| format!("/{i}")).unwrap_or_default();
        writeln!(
            out,
            "{} {kind} {}{instance} on {} by {}: {} {}",
            rfc3339_nanos(event.ts_unix_nanos),
            event.job,
            event.host,
            event.actor,
            event.reason,
            event.message
        )?;
    }
    Ok(())
}

#[derive(Subcommand, Debug)]
pub enum BusCommand {
    /// Topics, partitions, end offsets and consumer-group lag.
    #[command(after_help = "Examples:\n  sluice bus status\n  sluice bus status --json")]
    Status(StatusArgs),
    /// Print records as text or JSON lines.
    #[command(
        after_help = "Examples:\n  sluice bus dump --topic sluice.logs --json --max 5\n  sluice bus dump --topic sluice.events --from-beginning --follow"
    )]
    Dump(DumpArgs),
}

/// `sluice bus …`.
pub async fn run(command: BusCommand) -> anyhow::Result<()> {
    match command {
        BusCommand::Status(args) => status(args).await,
        BusCommand::Dump(args) => dump(args).await,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use sluice_schema::pb::{Line, Source};

    #[test]
    fn chunk_json_has_identity_and_flags() {
        let chunk = LogChunk {
            source: Some(Source {
                host: "n1".into(),
                job: "www/prod/api".into(),
                instance: 2,
                run: 1,
                process: "web".into(),
                stream: Stream::Stderr as i32,
                layout: Layout::Native as i32,
                source_id: 0xabc,
                labels: [("zone".to_string(), "b".to_string())].into(),
                ..Default::default()
            }),
            lines: vec![Line {
                offset: 7,
                text: vec![b'o', b'k', 0xff].into(),
                partial: true,
                ts_unix_nanos: 0,
                ..Default::default()
            }],
            shipped_at_unix_nanos: 0,
        };
        let mut out = Vec::new();
        assert_eq!(write_chunk(&mut out, &chunk, true, usize::MAX).unwrap(), 1);
        let value: Value = serde_json::from_slice(&out).unwrap();
        assert_eq!(value["source_id"], "0000000000000abc");
        assert_eq!(value["offset"], 7);
        assert_eq!(value["ts"], "1970-01-01T00:00:00.000000000Z");
        assert_eq!(value["job"], "www/prod/api");
        assert_eq!(value["instance"], 2);
        assert_eq!(value["run"], 1);
        assert_eq!(value["stream"], "stderr");
        assert_eq!(value["layout"], "native");
        assert_eq!(value["labels"]["zone"], "b");
        assert_eq!(value["line"], "ok\u{fffd}");
        assert_eq!(value["invalid_utf8"], true);
        assert_eq!(value["partial"], true);
        assert!(value.get("truncated").is_none());
    }

    #[test]
    fn event_kinds_print_as_snake_case() {
        assert_eq!(kind_name(EventKind::QuotaKill as i32), "quota_kill");
        assert_eq!(kind_name(999), "unknown_999");
    }
}

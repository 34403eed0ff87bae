//! The publisher: sends the tracker's chunks and the cluster's events to the
//! bus and reports each chunk's fate back to the tracker.
//!
//! Chunks are sent in the order the tracker produced them (so one source's
//! lines reach the bus in order) and acknowledged concurrently. A chunk the
//! bus refuses or fails is reported, and the tracker reads it again from the
//! file. Events have no file to fall back on: they wait in memory (bounded)
//! and are retried with backoff until the bus takes them.

use std::collections::VecDeque;
use std::sync::Arc;
use std::sync::mpsc::Sender;
use std::time::Duration;

use futures::future::BoxFuture;
use futures::stream::FuturesUnordered;
use futures::{FutureExt, StreamExt};
use prost::Message as _;
use sluice_broker::{Bus, Record};
use sluice_schema::pb::ClusterEvent;
use sluice_schema::topics;
use tokio::sync::mpsc::UnboundedReceiver as Receiver;

use crate::files::tracker::{AckNote, Hint, Outgoing};
use crate::metrics::Metrics;

/// Events kept while the bus is down; past it the oldest are dropped, counted
/// and logged.
const MAX_QUEUED_EVENTS: usize = 100_000;

pub(crate) async fn run(
    bus: Arc<dyn Bus>,
    mut input: Receiver<Outgoing>,
    acks: Sender<Hint>,
    metrics: Arc<Metrics>,
    mut stop: tokio::sync::oneshot::Receiver<()>,
) {
    let mut pending: FuturesUnordered<BoxFuture<'static, Done>> = FuturesUnordered::new();
    let mut events: VecDeque<ClusterEvent> = VecDeque::new();
    // One event in flight at a time keeps their order.
    let mut event_in_flight = false;
    let mut event_backoff = Duration::from_millis(100);
    let retry = tokio::time::sleep(Duration::ZERO);
    tokio::pin!(retry);
    let mut open = true;
    loop {
        if !open && pending.is_empty() {
            break;
        }
        let can_send_event = !events.is_empty() && !event_in_flight;
        tokio::select! {
            _ = &mut stop, if open => {
                open = false;
                if !events.is_empty() {
                    tracing::warn!(events = events.len(), "shutting down with cluster events the bus has not taken");
                }
            }
            item = input.recv(), if open => match item {
                Some(Outgoing::Chunk(c)) => {
                    let mut note = c.note;
                    let record = Record::new(c.key, c.payload, now_millis());
                    match bus.send(topics::LOGS, record).await {
                        Ok(ack) => pending.push(async move {
                            match ack.await {
                                Ok(_) => note.ok = true,
                                Err(e) => tracing::warn!(error = %e, "bus failed a chunk; it will be read again"),
                            }
                            Done::Chunk(note)
                        }.boxed()),
                        Err(e) => {
                            tracing::warn!(error = %e, "bus refused a chunk; it will be read again");
                            let _ = acks.send(Hint::Acked(note));
                        }
                    }
                }
                Some(Outgoing::Event(event)) => {
                    if events.len() >= MAX_QUEUED_EVENTS {
                        events.pop_front();
                        metrics.errors.inc();
                        tracing::error!("event queue full while the bus is down: dropped the oldest event");
                    }
                    events.push_back(event);
                }
                None => {
                    open = false;
                    if !events.is_empty() {
                        tracing::warn!(events = events.len(), "shutting down with cluster events the bus has not taken");
                    }
                }
            },
            Some(done) = pending.next() => match done {
                Done::Chunk(note) => {
                    if note.ok {
                        metrics.chunks_acked.inc();
                        metrics.acked_bytes.add(note.bytes as u64);
                    }
                    let _ = acks.send(Hint::Acked(note));
                }
                Done::Event(event, ok) => {
                    event_in_flight = false;
                    if ok {
                        metrics.events_published.inc();
                        event_backoff = Duration::from_millis(100);
                    } else {
                        events.push_front(event);
                        retry.as_mut().reset(tokio::time::Instant::now() + event_backoff);
                        event_backoff = (event_backoff * 2).min(Duration::from_secs(30));
                    }
                }
            },
            () = &mut retry, if can_send_event && open => {
                let event = events.pop_front().unwrap();
                let record = Record::new(topics::event_key(&event), event.encode_to_vec(), event.ts_unix_nanos / 1_000_000);
                let bus = bus.clone();
                event_in_flight = true;
                pending.push(async move {
                    let ok = match bus.send(topics::EVENTS, record).await {
                        Ok(ack) => ack.await.is_ok(),
                        Err(_) => false,
                    };
                    Done::Event(event, ok)
                }.boxed());
            }
        }
    }
}

enum Done {
    Chunk(AckNote),
    Event(ClusterEvent, bool),
}

fn now_millis() -> i64 {
    crate::files::tracker::now_nanos() / 1_000_000
}

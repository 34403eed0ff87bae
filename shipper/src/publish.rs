//! The publisher: sends the tracker's chunks to the bus and reports each
//! chunk's fate back to the tracker.
//!
//! Chunks are sent in the order the tracker produced them (so one source's
//! lines reach the bus in order) and acknowledged concurrently. A chunk the
//! bus refuses or fails is reported, and the tracker reads it again from the
//! file. (Cluster events go through `sluice_broker::BusEventSink`.)

use std::sync::Arc;
use std::sync::mpsc::Sender;

use futures::future::BoxFuture;
use futures::stream::FuturesUnordered;
use futures::{FutureExt, StreamExt};
use sluice_broker::{Bus, Record};
use sluice_schema::topics;
use tokio::sync::mpsc::UnboundedReceiver as Receiver;

use crate::metrics::Metrics;
use crate::pipeline::{AckNote, ChunkOut, Hint};

pub(crate) async fn run(
    bus: Arc<dyn Bus>,
    mut input: Receiver<ChunkOut>,
    acks: Sender<Hint>,
    metrics: Arc<Metrics>,
    mut stop: tokio::sync::oneshot::Receiver<()>,
) {
    let mut pending: FuturesUnordered<BoxFuture<'static, AckNote>> = FuturesUnordered::new();
    let mut open = true;
    loop {
        if !open && pending.is_empty() {
            break;
        }
        tokio::select! {
            _ = &mut stop, if open => open = false,
            item = input.recv(), if open => match item {
                Some(c) => {
                    let mut note = c.note;
                    let record = Record::new(c.key, c.payload, now_millis());
                    match bus.send(topics::LOGS, record).await {
                        Ok(ack) => pending.push(async move {
                            match ack.await {
                                Ok(_) => note.ok = true,
                                Err(e) => tracing::warn!(error = %e, "bus failed a chunk; it will be read again"),
                            }
                            note
                        }.boxed()),
                        Err(e) => {
                            tracing::warn!(error = %e, "bus refused a chunk; it will be read again");
                            let _ = acks.send(Hint::Acked(note));
                        }
                    }
                }
                None => open = false,
            },
            Some(note) = pending.next() => {
                if note.ok {
                    metrics.chunks_acked.inc();
                    metrics.acked_bytes.add(note.bytes as u64);
                }
                let _ = acks.send(Hint::Acked(note));
            }
        }
    }
}

fn now_millis() -> i64 {
    sluice_schema::time::now_unix_ms() as i64
}

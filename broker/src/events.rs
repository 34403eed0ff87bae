//! An [`EventSink`] that publishes cluster events to `sluice.events`: the
//! one way events reach the bus (the scheduler's, the agents' and the
//! shippers' alike).
//!
//! Emitting never blocks: events wait in a bounded queue and one task sends
//! them in order, retrying with backoff while the bus is down. Past the
//! bound the oldest are dropped, counted and logged. Each event keeps its
//! id across retries, so one the bus stored twice is archived once.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use prost::Message as _;
use sluice_schema::events::EventSink;
use sluice_schema::pb::ClusterEvent;
use sluice_schema::topics;
use tokio::sync::Notify;

use crate::{Bus, Record};

/// Events kept while the bus is down.
const MAX_QUEUED: usize = 100_000;

/// An [`EventSink`] that queues events in memory (at most 100,000; past that the
/// oldest are dropped) and publishes them in order to [`topics::EVENTS`] from a
/// background task, keyed by [`topics::event_key`].
#[derive(Debug)]
pub struct BusEventSink {
    queue: Arc<Queue>,
}

#[derive(Debug)]
struct Queue {
    events: Mutex<VecDeque<ClusterEvent>>,
    ready: Notify,
    dropped: std::sync::atomic::AtomicU64,
    published: std::sync::atomic::AtomicU64,
}

impl BusEventSink {
    /// Starts the sending task on the current Tokio runtime.
    pub fn start(bus: Arc<dyn Bus>) -> Arc<BusEventSink> {
        let queue = Arc::new(Queue {
            events: Mutex::new(VecDeque::new()),
            ready: Notify::new(),
            dropped: Default::default(),
            published: Default::default(),
        });
        tokio::spawn(send(bus, queue.clone()));
        Arc::new(BusEventSink { queue })
    }

    /// Events the bus has taken so far.
    pub fn published(&self) -> u64 {
        self.queue
            .published
            .load(std::sync::atomic::Ordering::Relaxed)
    }

    /// Events dropped because the queue was full while the bus was down.
    pub fn dropped(&self) -> u64 {
        self.queue
            .dropped
            .load(std::sync::atomic::Ordering::Relaxed)
    }

    /// Events waiting for the bus.
    pub fn queued(&self) -> usize {
        self.queue.events.lock().unwrap().len()
    }

    /// Waits until the queue is empty or `timeout` passes.
    pub async fn flush(&self, timeout: Duration) -> bool {
        let deadline = tokio::time::Instant::now() + timeout;
        while self.queued() > 0 {
            if tokio::time::Instant::now() >= deadline {
                return false;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        true
    }
}

impl EventSink for BusEventSink {
    fn emit(&self, event: ClusterEvent) {
        let mut events = self.queue.events.lock().unwrap();
        if events.len() >= MAX_QUEUED {
            events.pop_front();
            self.queue
                .dropped
                .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            tracing::error!("event queue full while the bus is down: dropped the oldest event");
        }
        events.push_back(event);
        drop(events);
        self.queue.ready.notify_one();
    }
}

/// Sends queued events in order until the sink is dropped and the queue is
/// empty.
async fn send(bus: Arc<dyn Bus>, q: Arc<Queue>) {
    let mut backoff = Duration::from_millis(100);
    loop {
        let next = q.events.lock().unwrap().front().cloned();
        let Some(event) = next else {
            if Arc::strong_count(&q) == 1 {
                return;
            }
            // Woken by `emit`, or now and then to notice the sink is gone.
            let _ = tokio::time::timeout(Duration::from_secs(1), q.ready.notified()).await;
            continue;
        };
        let record = Record::new(
            topics::event_key(&event),
            event.encode_to_vec(),
            event.ts_unix_nanos / 1_000_000,
        );
        let sent = match bus.send(topics::EVENTS, record).await {
            Ok(ack) => ack.await.is_ok(),
            Err(_) => false,
        };
        if sent {
            let mut events = q.events.lock().unwrap();
            if events.front().is_some_and(|e| e.id == event.id) {
                events.pop_front();
            }
            q.published
                .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            backoff = Duration::from_millis(100);
        } else {
            tracing::warn!(retry_in = ?backoff, "bus did not take a cluster event; retrying");
            tokio::time::sleep(backoff).await;
            backoff = (backoff * 2).min(Duration::from_secs(30));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::EmbeddedConfig;
    use crate::embedded::EmbeddedBus;

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn events_reach_the_bus_in_order() {
        let dir = tempfile::tempdir().unwrap();
        let bus: Arc<dyn Bus> =
            Arc::new(EmbeddedBus::open(dir.path(), EmbeddedConfig::default()).unwrap());
        let sink = BusEventSink::start(bus.clone());
        for i in 0..50 {
            sink.emit(ClusterEvent {
                id: format!("t/{i}"),
                job: "a/b/c".into(),
                ..Default::default()
            });
        }
        assert!(sink.flush(Duration::from_secs(10)).await);
        let mut consumer = bus.consumer("test", &[topics::EVENTS]).await.unwrap();
        let mut ids = Vec::new();
        while ids.len() < 50 {
            for m in consumer
                .poll(100, Duration::from_millis(200))
                .await
                .unwrap()
            {
                ids.push(ClusterEvent::decode(m.payload).unwrap().id);
            }
        }
        let want: Vec<String> = (0..50).map(|i| format!("t/{i}")).collect();
        assert_eq!(ids, want, "one key, one partition: in order");
    }
}

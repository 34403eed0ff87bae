//! The shipper as one thing to start and stop: the tracker thread, the
//! publisher task, the event sink and the inotify watcher, joined by
//! channels.
//!
//! ```text
//! inotify ──hints──▶ tracker (thread) ──chunks──▶ publisher (task) ──▶ Bus
//!                       ▲  │                          │
//!                       └──┼──── acknowledgements ────┘
//!                          └─ file events ──▶ BusEventSink ──▶ Bus
//! scheduler-core ──EventSink (the Tail tap, then BusEventSink)──▶
//! ```

use std::path::Path;
use std::sync::Arc;
use std::sync::mpsc;

use notify::{RecursiveMode, Watcher};
use sluice_broker::{Bus, BusEventSink};
use sluice_schema::events::{EventIds, EventSink};
use sluice_schema::pb::ClusterEvent;
use sluice_schema::time::now_unix_nanos as now_nanos;

use crate::files::tracker::{Tracker, TrackerParts};
use crate::metrics::Metrics;
use crate::pipeline::Hint;
use crate::pipeline::tap::{Tap, TapItem};
use crate::progress::Progress;
use crate::tail::{TailService, TailShared};
use crate::{Error, Result, ShipperConfig, publish};

/// A running shipper. Dropping it without [`Shipper::shutdown`] stops it too,
/// less gracefully (the last acknowledgements may not be checkpointed: those
/// lines are sent again after a restart, with the same names).
pub struct Shipper {
    config: ShipperConfig,
    hints: mpsc::Sender<Hint>,
    progress: Arc<Progress>,
    metrics: Arc<Metrics>,
    events: Arc<BusEvents>,
    tap: Tap,
    tracker: Option<std::thread::JoinHandle<()>>,
    publisher: Option<tokio::task::JoinHandle<()>>,
    stop_publisher: Option<tokio::sync::oneshot::Sender<()>>,
    _watcher: Option<notify::RecommendedWatcher>,
}

impl Shipper {
    /// Starts shipping the files under `config.root` to `bus`. Must be
    /// called within a Tokio runtime.
    pub fn start(config: ShipperConfig, bus: Arc<dyn Bus>) -> Result<Shipper> {
        config.validate()?;
        if !config.root.is_dir() {
            return Err(Error::Config(format!(
                "root: {} is not a directory",
                config.root.display()
            )));
        }
        let layout: Arc<dyn crate::layout::Layout> = match &config.kubernetes_api {
            Some(api) if config.layout == crate::layout::LayoutKind::Kubernetes => {
                let api = crate::layout::pod_api::PodApi::start(api).map_err(Error::Config)?;
                Arc::new(crate::layout::kubernetes::Kubernetes::with_api(Arc::new(
                    api,
                )))
            }
            _ => Arc::from(config.layout.layout()),
        };
        let progress = Arc::new(Progress::new(config.root.clone(), layout.clone()));
        let sink = BusEventSink::start(bus.clone());
        let metrics = Arc::new(Metrics::default());
        let _ = metrics.events.set(sink.clone());
        let (out, input) = tokio::sync::mpsc::unbounded_channel();
        let (hints, hint_rx) = mpsc::channel();
        let tap = Tap::new(config.tail_buffer);
        let event_ids = Arc::new(EventIds::new(
            &format!("shipper@{}", config.host),
            now_nanos(),
        ));
        let tracker = Tracker::new(TrackerParts {
            config: config.clone(),
            layout,
            progress: progress.clone(),
            metrics: metrics.clone(),
            out,
            events: sink.clone(),
            hints: hint_rx,
            event_ids,
            tap: tap.clone(),
        })?;
        let watcher = watch(&config.root, hints.clone());
        let tracker = std::thread::Builder::new()
            .name(format!("sluice-tracker-{}", config.host))
            .spawn(move || tracker.run())
            .map_err(|e| Error::io("failed to start the tracker for", &config.root, e))?;
        let (stop_publisher, stop) = tokio::sync::oneshot::channel();
        let publisher = tokio::spawn(publish::run(
            bus,
            input,
            hints.clone(),
            metrics.clone(),
            stop,
        ));
        tracing::info!(host = %config.host, layout = config.layout.name(), root = %config.root.display(), "shipper started");
        Ok(Shipper {
            events: Arc::new(BusEvents {
                sink,
                tap: tap.clone(),
            }),
            tap,
            config,
            hints,
            progress,
            metrics,
            tracker: Some(tracker),
            publisher: Some(publisher),
            stop_publisher: Some(stop_publisher),
            _watcher: watcher,
        })
    }

    /// The configuration the shipper was started with, as validated.
    pub fn config(&self) -> &ShipperConfig {
        &self.config
    }

    /// Ship progress per sandbox, for garbage collection.
    pub fn progress(&self) -> Arc<Progress> {
        self.progress.clone()
    }

    /// The live metrics, shared with the tracker, publisher and Tail service; render them
    /// with [`Metrics::write`].
    pub fn metrics(&self) -> Arc<Metrics> {
        self.metrics.clone()
    }

    /// Where the scheduler core sends cluster events: to `sluice.events`.
    pub fn event_sink(&self) -> Arc<dyn EventSink> {
        self.events.clone()
    }

    /// The Tail service over this shipper's sources.
    pub fn tail_service(&self) -> TailService {
        TailService::new(TailShared {
            host: self.config.host.clone(),
            framing: self.config.layout.layout().framing(),
            max_line_bytes: self.config.max_line_bytes,
            hints: self.hints.clone(),
            tap: self.tap.clone(),
            metrics: self.metrics.clone(),
        })
    }

    /// The task of `sandbox` ended: ship its unterminated last lines now
    /// instead of after the quiet period.
    pub fn sandbox_ended(&self, sandbox: &Path) {
        self.handle().sandbox_ended(sandbox);
    }

    /// What a node agent needs of the shipper, to keep beside it.
    pub fn handle(&self) -> ShipperHandle {
        ShipperHandle {
            progress: self.progress.clone(),
            hints: self.hints.clone(),
        }
    }

    /// Stops reading, waits briefly for outstanding acknowledgements, writes
    /// the checkpoints and stops.
    pub async fn shutdown(mut self) {
        self.stop().await;
    }

    async fn stop(&mut self) {
        let _ = self.hints.send(Hint::Shutdown);
        if let Some(tracker) = self.tracker.take() {
            let _ = tokio::task::spawn_blocking(move || tracker.join()).await;
        }
        if let Some(stop) = self.stop_publisher.take() {
            let _ = stop.send(());
        }
        if let Some(publisher) = self.publisher.take() {
            let _ = publisher.await;
        }
        if !self
            .events
            .sink
            .flush(std::time::Duration::from_secs(5))
            .await
        {
            tracing::warn!(
                events = self.events.sink.queued(),
                "shutting down with cluster events the bus has not taken"
            );
        }
        tracing::info!(host = %self.config.host, "shipper stopped");
    }
}

/// Ship progress and end-of-task hints, shareable (a node agent holds one).
#[derive(Clone)]
pub struct ShipperHandle {
    progress: Arc<Progress>,
    hints: mpsc::Sender<Hint>,
}

impl ShipperHandle {
    /// The shipper's progress record, to ask [`Progress::sandbox`] before
    /// deleting a sandbox; it keeps updating while the shipper runs.
    pub fn progress(&self) -> &Progress {
        &self.progress
    }

    /// See [`Shipper::sandbox_ended`].
    pub fn sandbox_ended(&self, sandbox: &Path) {
        let _ = self.hints.send(Hint::SandboxEnded(sandbox.to_path_buf()));
    }
}

impl Drop for Shipper {
    fn drop(&mut self) {
        let _ = self.hints.send(Hint::Shutdown);
        if let Some(stop) = self.stop_publisher.take() {
            let _ = stop.send(());
        }
    }
}

/// inotify on the root (recursive), as hints to the tracker; the tracker's
/// rescans cover what inotify misses or when it cannot watch at all.
fn watch(root: &Path, hints: mpsc::Sender<Hint>) -> Option<notify::RecommendedWatcher> {
    let handler = move |event: notify::Result<notify::Event>| match event {
        // Reads (ours included) and attribute changes say nothing new: only
        // creation, writes, renames and removals wake the tracker.
        Ok(event)
            if matches!(
                event.kind,
                notify::EventKind::Access(_)
                    | notify::EventKind::Modify(notify::event::ModifyKind::Metadata(_))
            ) => {}
        Ok(event) => {
            for path in event.paths {
                let _ = hints.send(Hint::Path(path));
            }
        }
        Err(e) => {
            tracing::warn!(error = %e, "file watcher error; rescanning");
            let _ = hints.send(Hint::Rescan);
        }
    };
    match notify::recommended_watcher(handler)
        .and_then(|mut w| w.watch(root, RecursiveMode::Recursive).map(|()| w))
    {
        Ok(watcher) => Some(watcher),
        Err(e) => {
            tracing::warn!(root = %root.display(), error = %e, "cannot watch the root; relying on periodic rescans");
            None
        }
    }
}

/// The cluster's events as the node sees them: shown to Tail streams, then
/// published.
struct BusEvents {
    sink: Arc<BusEventSink>,
    tap: Tap,
}

impl EventSink for BusEvents {
    fn emit(&self, event: ClusterEvent) {
        if self.tap.active() {
            self.tap.send(TapItem::Event(Arc::new(event.clone())));
        }
        self.sink.emit(event);
    }
}

//! The session: one task that owns the followers, the reorder window and
//! the renderer, and reacts to what the followers, the scheduler poller and
//! the terminal say.
//!
//! ```text
//! scheduler poller ──placements──▶ ┌─────────┐
//! follower (node-0) ──feeds──────▶ │ session │──merge──render──▶ output thread ──▶ stdout
//! follower (node-1) ──feeds──────▶ └─────────┘
//! ```
//!
//! Which nodes are followed: those that hold a selected instance, and for
//! [`LINGER`] after they stop holding one (an instance rescheduled away
//! may still have lines on its old node, which its old node sends when it
//! comes back). A follower that is let go parks its positions here, so
//! following the node again later resumes without a gap or duplicate.
//!
//! The backfill is held until every node known at the start has sent its
//! own (or three seconds passed), then printed in timestamp order; from then on
//! lines go through the reorder window, or straight out with `--unordered`.

use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::Arc;
use std::time::{Duration, Instant};

use sluice_schema::pb::{Line, Source};
use tokio::signal::unix::{Signal, SignalKind, signal};
use tokio::sync::{Notify, mpsc, watch};

use crate::cluster::{self, Placement, Polled, Scheduler};
use crate::merge::{Merger, QueueId};
use crate::output::{End, Output};
use crate::render::{Notice, Renderer};
use crate::stream::{Feed, Follower, HostState, Plan, Start};

/// How long a node is followed after it last held a selected instance.
pub const LINGER: Duration = Duration::from_secs(60);
/// Longest wait for the nodes' backfill before printing what arrived.
const HOLD: Duration = Duration::from_secs(3);
/// With `--no-follow`, the same, longer: nothing is live anyway.
const HOLD_NO_FOLLOW: Duration = Duration::from_secs(20);
/// The scheduler unreachable this long is reported.
const SCHEDULER_REPORT_AFTER: Duration = Duration::from_secs(5);
/// Feeds handled before the output gets what they rendered.
const FEEDS_PER_TURN: usize = 256;
/// Rendered bytes after which the output gets them.
const TURN_BYTES: usize = 1 << 20;
/// Event ids remembered to show each event once.
const EVENTS_REMEMBERED: usize = 4096;

/// What a [`Session`] starts with, from the flags.
pub struct Settings {
    /// What every node's stream asks for.
    pub plan: Arc<Plan>,
    /// How lines and notices are printed.
    pub renderer: Renderer,
    /// `None`: `--unordered`.
    pub window: Option<Duration>,
    /// `--quiet`: no lifecycle lines (events, placement changes); warnings
    /// still go to stderr.
    pub quiet: bool,
    /// How often the scheduler is polled (`--refresh`); never with
    /// `--no-follow`.
    pub refresh: Duration,
    /// Server time at the start: nodes found later send what appeared
    /// since.
    pub started_unix_nanos: i64,
}

enum Item {
    Line(Arc<Source>, Line),
    Notice(Notice),
}

struct Running {
    endpoint: watch::Sender<String>,
    stop: watch::Sender<bool>,
}

/// A running `tailll`: its followers, reorder window and renderer (see the
/// module docs).
pub struct Session {
    plan: Arc<Plan>,
    renderer: Renderer,
    merger: Merger<Item>,
    ordered: bool,
    quiet: bool,
    refresh: Duration,
    started_unix_nanos: i64,
    feeds_tx: mpsc::Sender<Feed>,
    feeds: mpsc::Receiver<Feed>,
    running: HashMap<Arc<str>, Running>,
    /// Told to stop, not parked yet: not started again until parked.
    stopping: HashSet<Arc<str>>,
    parked: HashMap<Arc<str>, HostState>,
    /// When each node last held a selected instance.
    wanted: HashMap<Arc<str>, Instant>,
    placement: Placement,
    queues: HashMap<(Arc<str>, u64), QueueId>,
    /// Nodes whose backfill is awaited, until `hold_until`.
    holding: Option<HashSet<Arc<str>>>,
    hold_until: Instant,
    events: (HashSet<String>, VecDeque<String>),
    /// `--no-follow`: nodes that could not be read.
    failed: Vec<String>,
    hint: Arc<Notify>,
    scheduler_down: Option<(Instant, bool)>,
    out: Vec<u8>,
    err: Vec<u8>,
}

impl Session {
    /// A session that follows no node yet; [`Session::run`] starts following.
    pub fn new(settings: Settings) -> Session {
        let (feeds_tx, feeds) = mpsc::channel(1024);
        Session {
            merger: Merger::new(settings.window.unwrap_or_default()),
            ordered: settings.window.is_some(),
            plan: settings.plan,
            renderer: settings.renderer,
            quiet: settings.quiet,
            refresh: settings.refresh,
            started_unix_nanos: settings.started_unix_nanos,
            feeds_tx,
            feeds,
            running: HashMap::new(),
            stopping: HashSet::new(),
            parked: HashMap::new(),
            wanted: HashMap::new(),
            placement: Placement::default(),
            queues: HashMap::new(),
            holding: None,
            hold_until: Instant::now(),
            events: Default::default(),
            failed: Vec::new(),
            hint: Arc::new(Notify::new()),
            scheduler_down: None,
            out: Vec::new(),
            err: Vec::new(),
        }
    }

    /// Runs until Ctrl-C, a closed pipe, a refusal, or (`--no-follow`)
    /// every node's backfill is printed.
    pub async fn run(
        mut self,
        first: Placement,
        scheduler: Scheduler,
        mut output: Output,
        mut interrupts: Interrupts,
    ) -> anyhow::Result<()> {
        let now = Instant::now();
        self.place(first, true, now);
        self.holding = Some(self.running.keys().cloned().collect());
        self.hold_until = now
            + if self.plan.no_follow {
                HOLD_NO_FOLLOW
            } else {
                HOLD
            };
        let (polls_tx, mut polls) = mpsc::channel(4);
        let poller = (!self.plan.no_follow)
            .then(|| cluster::spawn_poller(scheduler, self.refresh, self.hint.clone(), polls_tx));
        let result = loop {
            self.advance(Instant::now());
            self.flush(&mut output).await;
            if self.plan.no_follow && self.running.is_empty() && self.holding.is_none() {
                break Ok(());
            }
            let deadline = match &self.holding {
                Some(_) => Some(self.hold_until),
                None => self.merger.deadline(),
            };
            let wake = deadline.unwrap_or_else(|| Instant::now() + Duration::from_secs(3600));
            tokio::select! {
                biased;
                () = interrupts.recv() => break Ok(()),
                end = output.ended() => match end {
                    End::Failed(e) => break Err(anyhow::anyhow!(e)),
                    _ => return Ok(()),
                },
                feed = self.feeds.recv() => {
                    // What is waiting too, up to a turn's worth; then show
                    // what is due.
                    let (mut next, mut handled, mut failed) = (feed, 0, None);
                    while let Some(feed) = next.take() {
                        if let Err(e) = self.feed(feed) {
                            failed = Some(e);
                            break;
                        }
                        handled += 1;
                        if handled < FEEDS_PER_TURN && self.out.len() < TURN_BYTES {
                            next = self.feeds.try_recv().ok();
                        }
                    }
                    if let Some(e) = failed {
                        break Err(e);
                    }
                }
                polled = polls.recv(), if poller.is_some() => match polled {
                    Some(Polled::Placement(p)) => {
                        if let Some((since, true)) = self.scheduler_down.take() {
                            self.warn(&format!(
                                "the scheduler answers again after {}s",
                                since.elapsed().as_secs()
                            ));
                        }
                        self.place(p, false, Instant::now());
                    }
                    Some(Polled::Failed(e)) => {
                        let (since, reported) =
                            self.scheduler_down.get_or_insert((Instant::now(), false));
                        if !*reported && since.elapsed() >= SCHEDULER_REPORT_AFTER {
                            *reported = true;
                            let message = format!(
                                "the scheduler is unreachable for {}s ({e:#}); following the nodes already known, still trying",
                                since.elapsed().as_secs()
                            );
                            self.warn(&message);
                        }
                    }
                    Some(Polled::Fatal(e)) => break Err(e),
                    None => break Err(anyhow::anyhow!("the scheduler poller stopped")),
                },
                () = tokio::time::sleep_until(wake.into()) => {}
            }
        };
        if let Some(poller) = poller {
            poller.abort();
        }
        for running in self.running.values() {
            let _ = running.stop.send(true);
        }
        // What is held is shown before leaving (Ctrl-C, end of backfill).
        if result.is_ok() {
            self.holding = None;
            self.drain();
            self.flush(&mut output).await;
        }
        match output.finish(Duration::from_secs(2)).await {
            End::Failed(e) if result.is_ok() => return Err(anyhow::anyhow!(e)),
            End::PipeClosed => return Ok(()),
            _ => {}
        }
        result?;
        if !self.failed.is_empty() {
            anyhow::bail!(
                "could not read every node: {} (lines of their instances are missing above)",
                self.failed.join(", ")
            );
        }
        Ok(())
    }

    fn feed(&mut self, feed: Feed) -> anyhow::Result<()> {
        match feed {
            Feed::Lines {
                host,
                source,
                lines,
            } => {
                if self.holding.is_some() || self.ordered {
                    let queue = self.queue(&host, source.source_id);
                    let now = Instant::now();
                    for line in lines {
                        let ts = line.ts_unix_nanos;
                        self.merger
                            .push(queue, ts, now, Item::Line(source.clone(), line));
                    }
                } else {
                    for line in &lines {
                        self.renderer.line(&mut self.out, &source, line);
                    }
                }
            }
            Feed::Event(event) => {
                self.hint.notify_one();
                if self.quiet || !self.first_time(&event.id) {
                    return Ok(());
                }
                if let Some(notice) = cluster::event_notice(&event) {
                    let host: Arc<str> = event.host.as_str().into();
                    self.notice(&host, notice);
                }
            }
            Feed::Notice(notice) => {
                if !self.quiet {
                    self.notice(&Arc::from(""), notice);
                }
            }
            Feed::Warning(warning) => self.warn(&warning),
            Feed::CaughtUp(host) => {
                if let Some(waiting) = &mut self.holding {
                    waiting.remove(&host);
                }
            }
            Feed::Broken(_) => self.hint.notify_one(),
            Feed::Done { host, ok } => {
                self.running.remove(&host);
                if let Some(waiting) = &mut self.holding {
                    waiting.remove(&host);
                }
                if !ok {
                    self.failed.push(host.to_string());
                }
            }
            Feed::Parked { host, state } => {
                self.stopping.remove(&host);
                self.parked.insert(host, state);
            }
            Feed::Fatal(e) => return Err(e),
        }
        Ok(())
    }

    /// Whether an event id is new.
    fn first_time(&mut self, id: &str) -> bool {
        if id.is_empty() {
            return true;
        }
        let (set, order) = &mut self.events;
        if !set.insert(id.to_string()) {
            return false;
        }
        order.push_back(id.to_string());
        if order.len() > EVENTS_REMEMBERED
            && let Some(old) = order.pop_front()
        {
            set.remove(&old);
        }
        true
    }

    fn notice(&mut self, host: &Arc<str>, notice: Notice) {
        if self.holding.is_some() || self.ordered {
            // Each origin's notices in their order; u64::MAX is no source.
            let queue = self.queue(host, u64::MAX);
            self.merger
                .push(queue, notice.ts, Instant::now(), Item::Notice(notice));
        } else {
            self.renderer.notice(&mut self.out, &mut self.err, &notice);
        }
    }

    fn warn(&mut self, text: &str) {
        self.err.extend_from_slice(b"tailll: ");
        self.err.extend_from_slice(text.as_bytes());
        self.err.push(b'\n');
    }

    fn queue(&mut self, host: &Arc<str>, source_id: u64) -> QueueId {
        let next = self.queues.len() as QueueId;
        *self.queues.entry((host.clone(), source_id)).or_insert(next)
    }

    /// Starts following the nodes that hold selected instances, lets go of
    /// those that have not for [`LINGER`], and says what changed.
    fn place(&mut self, placement: Placement, initial: bool, now: Instant) {
        if !initial && !self.quiet {
            let now_nanos = now_unix_nanos();
            for notice in cluster::changes(&self.placement, &placement, now_nanos) {
                self.notice(&Arc::from(""), notice);
            }
        }
        self.renderer.widen(placement.max_instance());
        for host in placement.hosts() {
            self.wanted.insert(host.as_str().into(), now);
        }
        for (host, running) in &self.running {
            if let Some(endpoint) = placement.endpoints.get(&**host) {
                running.endpoint.send_if_modified(|current| {
                    let changed = current != endpoint;
                    if changed {
                        current.clone_from(endpoint);
                    }
                    changed
                });
            }
        }
        let no_follow = self.plan.no_follow;
        let (keep, drop): (Vec<_>, Vec<_>) = self
            .wanted
            .iter()
            .map(|(host, at)| (host.clone(), now.duration_since(*at) < LINGER))
            .partition(|(_, keep)| *keep);
        for (host, _) in keep {
            if self.running.contains_key(&host) || self.stopping.contains(&host) {
                continue;
            }
            if no_follow && !initial {
                continue;
            }
            let Some(endpoint) = placement.endpoints.get(&*host) else {
                continue;
            };
            let state = self.parked.remove(&host).unwrap_or_else(|| {
                HostState::new(match initial {
                    true => Start::Backfill,
                    false => Start::NewSince(self.started_unix_nanos),
                })
            });
            self.spawn(host, endpoint.clone(), state);
        }
        if !no_follow {
            for (host, _) in drop {
                self.wanted.remove(&host);
                if let Some(running) = self.running.remove(&host) {
                    let _ = running.stop.send(true);
                    self.stopping.insert(host);
                }
            }
        }
        self.placement = placement;
    }

    fn spawn(&mut self, host: Arc<str>, endpoint: String, state: HostState) {
        let (endpoint_tx, endpoint_rx) = watch::channel(endpoint);
        let (stop_tx, stop_rx) = watch::channel(false);
        let follower = Follower::new(
            host.clone(),
            endpoint_rx,
            self.plan.clone(),
            state,
            self.feeds_tx.clone(),
        );
        tokio::spawn(follower.run(stop_rx));
        self.running.insert(
            host,
            Running {
                endpoint: endpoint_tx,
                stop: stop_tx,
            },
        );
    }

    /// Lets out what is due at `now`.
    fn advance(&mut self, now: Instant) {
        if let Some(waiting) = &self.holding {
            if !waiting.is_empty() && now < self.hold_until {
                return;
            }
            self.holding = None;
            self.drain();
            return;
        }
        let (renderer, out, err) = (&mut self.renderer, &mut self.out, &mut self.err);
        if self.ordered {
            self.merger
                .pop_due(now, |item| show(renderer, out, err, item));
        } else {
            self.merger.drain(|item| show(renderer, out, err, item));
        }
    }

    fn drain(&mut self) {
        let (renderer, out, err) = (&mut self.renderer, &mut self.out, &mut self.err);
        self.merger.drain(|item| show(renderer, out, err, item));
    }

    async fn flush(&mut self, output: &mut Output) {
        if !self.err.is_empty() {
            use std::io::Write as _;
            let _ = std::io::stderr().write_all(&self.err);
            self.err.clear();
        }
        if !self.out.is_empty() {
            output.write(std::mem::take(&mut self.out)).await;
        }
    }
}

fn show(renderer: &mut Renderer, out: &mut Vec<u8>, err: &mut Vec<u8>, item: Item) {
    match item {
        Item::Line(source, line) => renderer.line(out, &source, &line),
        Item::Notice(notice) => renderer.notice(out, err, &notice),
    }
}

pub use sluice_schema::time::now_unix_nanos;

/// Ctrl-C and SIGTERM, listened for from the start (before the first
/// call to the scheduler), so either ends tailll with status 0.
pub struct Interrupts {
    int: Option<Signal>,
    term: Option<Signal>,
}

impl Interrupts {
    /// Starts listening for SIGINT and SIGTERM; one that cannot be listened
    /// for never arrives.
    pub fn listen() -> Interrupts {
        Interrupts {
            int: signal(SignalKind::interrupt()).ok(),
            term: signal(SignalKind::terminate()).ok(),
        }
    }

    /// Listens for nothing: the session ends when its output's reader goes
    /// away.
    pub fn never() -> Interrupts {
        Interrupts {
            int: None,
            term: None,
        }
    }

    /// Waits for the next SIGINT or SIGTERM.
    pub async fn recv(&mut self) {
        async fn one(s: &mut Option<Signal>) {
            match s {
                Some(s) => {
                    s.recv().await;
                }
                None => std::future::pending().await,
            }
        }
        tokio::select! {
            () = one(&mut self.int) => {}
            () = one(&mut self.term) => {}
        }
    }
}

//! The Tail service (`sluice.v1.Tail`): live lines of the sources this
//! shipper tails, for `tailll`.
//!
//! ```text
//! tracker ──tap (broadcast)──▶ follow::run (one task per stream) ──▶ gRPC stream
//!    ▲                              │
//!    └────── snapshot request ──────┘  (then the files, for backfill and catch-up)
//! ```
//!
//! A stream selects sources by job glob, instances, streams and processes,
//! filters lines with a regular expression on the node, backfills the last
//! N lines or the lines since a time, then follows. Lines arrive as the
//! tracker reads them (inotify, so well under a second after they are
//! written); the tracker reads only as fast as the bus takes lines, so a
//! stalled bus stalls tails too (the files are the buffer). A stream that
//! falls behind catches up from the files. Each message carries the
//! server's time; lines carry `(source_id, offset)`, and a client that
//! reconnects with its positions and the time of its last message gets no
//! gap and no duplicate (see `follow`).
//!
//! Authorisation: the caller sees only sources and events of roles it may
//! read; a glob that names a role the caller may not read is refused.

mod backfill;
mod follow;

use std::pin::Pin;
use std::sync::Arc;
use std::sync::mpsc;

use futures::Stream;
use sluice_schema::auth::principal;
use sluice_schema::pb::tail_server::Tail;
use sluice_schema::pb::{FollowRequest, TailMessage};
use tokio::sync::mpsc as async_mpsc;
use tonic::{Request, Response, Status};

use crate::pipeline::Hint;
use sluice_schema::audit::{Audit, Call, method_of, outcome};
use sluice_schema::limits::PerUser;

use crate::layout::Framing;
use crate::metrics::Metrics;
use crate::pipeline::tap::Tap;

/// Messages buffered per stream before the stream waits for its client
/// (and, if the client stays slow, falls behind the tap and catches up).
const STREAM_BUFFER: usize = 64;

pub(crate) struct TailShared {
    pub host: String,
    pub framing: Framing,
    pub max_line_bytes: usize,
    pub hints: mpsc::Sender<Hint>,
    pub tap: Tap,
    pub metrics: Arc<Metrics>,
}

/// Tail streams one user may have open at once on one node, by default.
pub const DEFAULT_STREAMS_PER_USER: usize = 32;

/// The gRPC service; wrap it in `TailServer::with_interceptor(service,
/// AuthInterceptor::new(tokens))`. Every stream opened (or refused) is on
/// the audit trail when the service has an [`Audit`].
#[derive(Clone)]
pub struct TailService {
    shared: Arc<TailShared>,
    audit: Option<Arc<Audit>>,
    streams: PerUser,
}

impl TailService {
    pub(crate) fn new(shared: TailShared) -> Self {
        TailService {
            shared: Arc::new(shared),
            audit: None,
            streams: PerUser::new(
                "tail streams",
                "--max-tail-streams-per-user",
                DEFAULT_STREAMS_PER_USER,
            ),
        }
    }

    /// Records each `Follow` in `audit`.
    pub fn with_audit(mut self, audit: Arc<Audit>) -> Self {
        self.audit = Some(audit);
        self
    }

    /// At most `max` streams open at once per user.
    pub fn with_streams_per_user(mut self, max: usize) -> Self {
        self.streams = PerUser::new("tail streams", "--max-tail-streams-per-user", max);
        self
    }
}

type FollowStream = Pin<Box<dyn Stream<Item = Result<TailMessage, Status>> + Send>>;

#[tonic::async_trait]
impl Tail for TailService {
    type FollowStream = FollowStream;

    async fn follow(
        &self,
        request: Request<FollowRequest>,
    ) -> Result<Response<FollowStream>, Status> {
        let caller = principal(&request)?;
        let method = method_of(&request, "/sluice.v1.Tail/Follow");
        let peer = request.remote_addr();
        let glob = request
            .get_ref()
            .selector
            .as_ref()
            .map(|s| s.job.clone())
            .unwrap_or_default();
        let opened = (|| {
            let plan = follow::Plan::new(request.into_inner(), caller.clone())?;
            if let Some(role) = plan.glob.exact_role() {
                caller.require_read(role)?;
            }
            let permit = self.streams.acquire(&caller.user)?;
            Ok::<_, Status>((plan, permit))
        })();
        if let Some(audit) = &self.audit {
            let job = if glob.contains(['*', '?', '[']) || glob.matches('/').count() != 2 {
                String::new()
            } else {
                glob.clone()
            };
            let call = Call {
                actor: caller.user.clone(),
                method,
                target: glob,
                job,
                outcome: outcome(&opened),
                peer,
            };
            audit.record(call, sluice_schema::time::now_unix_nanos());
        }
        let (plan, permit) = opened?;
        let (tx, rx) = async_mpsc::channel(STREAM_BUFFER);
        let shared = self.shared.clone();
        tokio::spawn(async move {
            // The stream's place is taken until it ends.
            let _permit = permit;
            follow::run(shared, plan, tx).await;
        });
        let stream = futures::stream::unfold(rx, |mut rx| async move {
            rx.recv().await.map(|item| (item, rx))
        });
        Ok(Response::new(Box::pin(stream)))
    }
}

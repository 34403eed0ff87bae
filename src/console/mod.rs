//! The console's HTTP API, `/api/v1/…` (issue 19; the pages are not built
//! yet): JSON over HTTPS for scripts and, later, the browser console.
//!
//! - **One path to the data.** Every handler calls the cluster's gRPC
//!   services (`sluice.v1.Query`, …) with the caller's own token, as the CLI
//!   does: the services scope rows to the token's roles, enforce their
//!   limits and record the calls on the audit trail. There is no second
//!   query path here.
//! - **Who.** A script sends `Authorization: Bearer TOKEN`. A browser logs
//!   in once (`POST /api/v1/login` with the token in the body, never in a
//!   URL) and gets a session cookie: `HttpOnly` (no script reads it),
//!   `Secure`, `SameSite=Strict` (no other site's page sends it). A session
//!   holds its token and re-checks it on every request, so revoking the
//!   token ends its sessions at once. Logins, good and bad, are `api_call`
//!   events (refusals at the audit trail's rate limit).
//! - **Forgery.** A request that changes anything (`POST`) and is
//!   authenticated by the cookie must be `application/json` (a cross-site
//!   form cannot send that without a CORS preflight, which is never
//!   granted) and, when the browser says where it comes from (`Origin`),
//!   come from the console's own origin.
//! - **Limits.** Bodies of at most [`MAX_BODY_BYTES`]; at most
//!   [`session::MAX_SESSIONS`] live sessions (the oldest is dropped); a session lasts
//!   [`SESSION_TTL`].
//! - **Cancelling.** A client that goes away drops its request, and with it
//!   the gRPC call: the query stops on the server.

mod api;
mod session;

use std::net::SocketAddr;
use std::sync::Arc;

use anyhow::Context as _;
use tonic::transport::Channel;

use crate::shared::serve::Guard;
pub use session::SESSION_TTL;

/// The largest request body the API reads.
pub const MAX_BODY_BYTES: usize = 1 << 20;

/// The cookie that carries a browser's session.
pub const COOKIE: &str = "sluice_session";

/// Where the console's handlers find the cluster's services.
#[derive(Clone)]
pub struct Upstream {
    /// A channel to the gRPC services (`https://…`), shared by every
    /// request; each call adds its caller's token.
    pub channel: Channel,
    /// The data directory whose `client.toml` names the cluster, for the
    /// live tail (tailll's own code, with the caller's token).
    pub data_dir: std::path::PathBuf,
}

impl Upstream {
    /// A lazily connected channel to `endpoint`, checked against `ca`.
    pub fn new(
        endpoint: &str,
        ca: Option<&str>,
        data_dir: &std::path::Path,
    ) -> anyhow::Result<Upstream> {
        let channel = sluice_client::endpoint(endpoint, ca, &Default::default())
            .with_context(|| format!("the console's upstream {endpoint}"))?
            .connect_lazy();
        Ok(Upstream {
            channel,
            data_dir: data_dir.to_path_buf(),
        })
    }
}

/// The console's state: who may call, where the services are, the
/// sessions.
pub struct Console {
    guard: Guard,
    upstream: Upstream,
    sessions: session::Sessions,
}

/// Serves the console on `listen` over the guard's TLS until the process
/// ends; returns the bound address.
pub async fn serve(
    listen: SocketAddr,
    guard: Guard,
    upstream: Upstream,
) -> anyhow::Result<SocketAddr> {
    let listener = tokio::net::TcpListener::bind(listen)
        .await
        .with_context(|| format!("failed to listen on {listen} for the console"))?;
    let bound = listener.local_addr()?;
    let tls = guard.tls.acceptor()?;
    let console = Arc::new(Console {
        guard,
        upstream,
        sessions: session::Sessions::default(),
    });
    crate::shared::serve::serve_https(listener, tls, "console", move |request, peer| {
        let console = console.clone();
        async move { api::answer(&console, request, peer).await }
    });
    Ok(bound)
}

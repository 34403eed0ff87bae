//! What every gRPC server of `sluice` shares: TLS, the token store (kept up
//! to date with the token file), the audit trail of calls, the largest
//! message a call may carry, the accepted connections of a listener and the
//! signals that stop a process.

use std::sync::Arc;

use sluice_schema::audit::{Audit, CallPathLayer};
use sluice_schema::auth::{AuthInterceptor, TokenStore};
use tonic::transport::Server;
use tower_layer::{Identity, Stack};

use crate::shared::tls::ServerTls;

/// The largest message a service accepts (a larger one is refused with
/// `resource_exhausted` naming this limit).
pub const MAX_MESSAGE_BYTES: usize = 16 << 20;

/// Who may call a server, how it proves who it is, and where calls are
/// recorded.
#[derive(Clone)]
pub struct Guard {
    pub tokens: TokenStore,
    pub tls: ServerTls,
    pub audit: Arc<Audit>,
}

impl Guard {
    /// The interceptor for `service` (`sluice.v1.Query`): bearer tokens,
    /// refusals on the audit trail.
    pub fn auth(&self, service: &'static str) -> AuthInterceptor {
        AuthInterceptor::new(self.tokens.clone()).with_audit(self.audit.clone(), service)
    }

    /// A server builder with TLS and the call-path layer.
    pub fn builder(&self) -> anyhow::Result<Server<Stack<CallPathLayer, Identity>>> {
        Ok(Server::builder()
            .tls_config(self.tls.tonic())?
            .layer(CallPathLayer))
    }
}

/// Serves HTTP/1 over `tls` on `listener` until the process ends (the
/// OTLP/HTTP receiver and the console): each connection's handshake gets at
/// most 10 s (a plain-text client gets no answer), then every request is
/// `answer(request, client address)`.
pub fn serve_https<F, Fut, B>(
    listener: tokio::net::TcpListener,
    tls: tokio_rustls::TlsAcceptor,
    what: &'static str,
    answer: F,
) where
    F: Fn(hyper::Request<hyper::body::Incoming>, std::net::SocketAddr) -> Fut
        + Clone
        + Send
        + Sync
        + 'static,
    Fut: std::future::Future<Output = hyper::Response<B>> + Send + 'static,
    B: hyper::body::Body + Send + 'static,
    B::Data: Send,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    tokio::spawn(async move {
        while let Ok((stream, peer)) = listener.accept().await {
            let (tls, answer) = (tls.clone(), answer.clone());
            tokio::spawn(async move {
                let accepted =
                    tokio::time::timeout(std::time::Duration::from_secs(10), tls.accept(stream))
                        .await;
                let Ok(Ok(stream)) = accepted else {
                    return; // a plain-text client, or a handshake that failed
                };
                let service = hyper::service::service_fn(move |request| {
                    let reply = answer(request, peer);
                    async move { Ok::<_, std::convert::Infallible>(reply.await) }
                });
                let connection = hyper::server::conn::http1::Builder::new()
                    .serve_connection(hyper_util::rt::TokioIo::new(stream), service);
                if let Err(e) = connection.await {
                    tracing::debug!(error = %e, "{what} connection ended");
                }
            });
        }
    });
}

/// Accepted connections of `listener`, for tonic.
pub fn incoming(
    listener: tokio::net::TcpListener,
) -> impl futures::Stream<Item = std::io::Result<tokio::net::TcpStream>> {
    futures::stream::unfold(listener, |listener| async move {
        let accepted = listener.accept().await.map(|(stream, _)| stream);
        Some((accepted, listener))
    })
}

/// Ctrl-C or SIGTERM. The handlers are installed when this is called, not
/// when the future is first polled: a process that calls it before a slow
/// start-up (joining a consumer group, opening a table) and awaits it after
/// still stops cleanly on a signal that arrived in between, instead of
/// dying with the default action and leaving its group unannounced.
pub fn shutdown_signal() -> impl std::future::Future<Output = ()> {
    use tokio::signal::unix::{SignalKind, signal};
    let mut term = signal(SignalKind::terminate()).expect("SIGTERM handler");
    let mut int = signal(SignalKind::interrupt()).expect("SIGINT handler");
    async move {
        tokio::select! {
            _ = int.recv() => {}
            _ = term.recv() => {}
        }
    }
}

//! OpenTelemetry logs in (`--otlp-grpc-listen`, `--otlp-http-listen`):
//! the OTLP `LogsService` over gRPC and `POST /v1/logs` over HTTP
//! (protobuf or JSON), on ports of their own, with the TLS, bearer tokens
//! and audit of refusals every other service has. What a record becomes is
//! `sluice_shipper::otlp`'s.

use std::net::SocketAddr;
use std::sync::Arc;

use anyhow::Context as _;
use bytes::Bytes;
use clap::Args;
use http_body_util::{BodyExt as _, Full, Limited};
use sluice_schema::audit::{ANONYMOUS, Call};
use sluice_schema::time::now_unix_nanos;
use sluice_shipper::otlp::{self, MAX_REQUEST_BYTES, Receiver};
use tonic::service::interceptor::InterceptedService;

use crate::shared::serve::{Guard, incoming};

/// The gRPC service's name, as audit records name it.
const SERVICE: &str = "opentelemetry.proto.collector.logs.v1.LogsService";

/// Where OTLP logs are taken.
#[derive(Args, Debug, Clone, Default)]
pub struct OtlpArgs {
    /// Take OpenTelemetry logs over OTLP/gRPC on ADDR (HTTPS, bearer token;
    /// conventionally port 4317).
    #[arg(long, value_name = "ADDR", env = "SLUICE_OTLP_GRPC_LISTEN")]
    pub otlp_grpc_listen: Option<SocketAddr>,
    /// Take OpenTelemetry logs over OTLP/HTTP on ADDR: `POST /v1/logs`,
    /// protobuf or JSON (HTTPS, bearer token; conventionally port 4318).
    #[arg(long, value_name = "ADDR", env = "SLUICE_OTLP_HTTP_LISTEN")]
    pub otlp_http_listen: Option<SocketAddr>,
}

impl OtlpArgs {
    /// Whether either listener is asked for.
    pub fn any(&self) -> bool {
        self.otlp_grpc_listen.is_some() || self.otlp_http_listen.is_some()
    }
}

/// Serves what `args` asks for with `receiver`, for the life of the
/// process; prints each endpoint.
pub async fn serve(args: &OtlpArgs, receiver: Arc<Receiver>, guard: &Guard) -> anyhow::Result<()> {
    if let Some(listen) = args.otlp_grpc_listen {
        let listener = tokio::net::TcpListener::bind(listen)
            .await
            .with_context(|| format!("failed to listen on {listen} for OTLP/gRPC"))?;
        let bound = listener.local_addr()?;
        let server = guard
            .builder()?
            .add_service(InterceptedService::new(
                receiver.grpc(),
                guard.auth(SERVICE),
            ))
            .serve_with_incoming(incoming(listener));
        tokio::spawn(async move {
            if let Err(e) = server.await {
                tracing::error!(error = %e, "the OTLP/gRPC service failed");
            }
        });
        eprintln!(
            "OTLP/gRPC on https://{}",
            crate::shared::tls::reported(bound)
        );
    }
    if let Some(listen) = args.otlp_http_listen {
        let listener = tokio::net::TcpListener::bind(listen)
            .await
            .with_context(|| format!("failed to listen on {listen} for OTLP/HTTP"))?;
        let bound = listener.local_addr()?;
        let tls = guard.tls.acceptor()?;
        let guard = guard.clone();
        crate::shared::serve::serve_https(listener, tls, "OTLP/HTTP", move |request, peer| {
            let (guard, receiver) = (guard.clone(), receiver.clone());
            async move { answer(request, peer, &guard, &receiver).await }
        });
        eprintln!(
            "OTLP/HTTP on https://{}/v1/logs",
            crate::shared::tls::reported(bound)
        );
    }
    Ok(())
}

/// `google.rpc.Status`, the body of an OTLP/HTTP failure.
#[derive(Clone, PartialEq, prost::Message)]
struct RpcStatus {
    #[prost(int32, tag = "1")]
    code: i32,
    #[prost(string, tag = "2")]
    message: String,
}

type Reply = hyper::Response<Full<Bytes>>;

/// One OTLP/HTTP request.
async fn answer(
    request: hyper::Request<hyper::body::Incoming>,
    peer: SocketAddr,
    guard: &Guard,
    receiver: &Receiver,
) -> Reply {
    let content_type = request
        .headers()
        .get(hyper::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_string();
    let fail = |status: tonic::Status| failure(&content_type, status);
    if request.uri().path() != "/v1/logs" {
        return fail(tonic::Status::not_found(format!(
            "{}: OTLP/HTTP logs are taken at /v1/logs",
            request.uri().path()
        )));
    }
    if request.method() != hyper::Method::POST {
        return fail(tonic::Status::unimplemented("POST /v1/logs"));
    }
    let token = request
        .headers()
        .get(hyper::header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .map(str::trim);
    let principal = match token.and_then(|t| guard.tokens.authenticate(t)) {
        Some(p) => p,
        None => {
            let status = tonic::Status::unauthenticated(match token {
                None => "missing bearer token",
                Some(_) => "invalid bearer token",
            });
            guard.audit.refused(
                Call {
                    actor: ANONYMOUS.to_string(),
                    method: format!("/{SERVICE}/Export (HTTP)"),
                    target: String::new(),
                    job: String::new(),
                    outcome: format!("unauthenticated: {}", status.message()),
                    peer: Some(peer),
                },
                now_unix_nanos(),
            );
            return fail(status);
        }
    };
    let body = match Limited::new(request.into_body(), MAX_REQUEST_BYTES)
        .collect()
        .await
    {
        Ok(body) => body.to_bytes(),
        Err(_) => {
            return fail(tonic::Status::resource_exhausted(format!(
                "the body is larger than {MAX_REQUEST_BYTES} bytes, or was cut off"
            )));
        }
    };
    let export = match otlp::decode_http(&content_type, &body) {
        Ok(export) => export,
        Err(problem) => return fail(tonic::Status::invalid_argument(problem)),
    };
    match receiver.export(&principal, export).await {
        Ok(_) => {
            let (media, bytes) = otlp::encode_http_response(&content_type);
            hyper::Response::builder()
                .header(hyper::header::CONTENT_TYPE, media)
                .body(Full::new(Bytes::from(bytes)))
                .expect("a valid response")
        }
        Err(status) => fail(status),
    }
}

/// An OTLP/HTTP failure: the status code the specification gives the
/// error (429/502/503/504 are the retryable ones) and a `google.rpc.Status`
/// body in the request's encoding.
fn failure(content_type: &str, status: tonic::Status) -> Reply {
    use hyper::StatusCode;
    use tonic::Code;
    let code = match status.code() {
        Code::Unauthenticated => StatusCode::UNAUTHORIZED,
        Code::PermissionDenied => StatusCode::FORBIDDEN,
        Code::NotFound => StatusCode::NOT_FOUND,
        Code::Unimplemented => StatusCode::METHOD_NOT_ALLOWED,
        Code::ResourceExhausted => StatusCode::PAYLOAD_TOO_LARGE,
        Code::Unavailable => StatusCode::SERVICE_UNAVAILABLE,
        Code::InvalidArgument => StatusCode::BAD_REQUEST,
        _ => StatusCode::INTERNAL_SERVER_ERROR,
    };
    let body = RpcStatus {
        code: status.code() as i32,
        message: status.message().to_string(),
    };
    let (media, bytes) = if content_type.to_ascii_lowercase().starts_with(otlp::JSON) {
        let json = serde_json::json!({"code": body.code, "message": body.message});
        (otlp::JSON, json.to_string().into_bytes())
    } else {
        use prost::Message as _;
        (otlp::PROTOBUF, body.encode_to_vec())
    };
    hyper::Response::builder()
        .status(code)
        .header(hyper::header::CONTENT_TYPE, media)
        .body(Full::new(Bytes::from(bytes)))
        .expect("a valid response")
}

//! Serves the two HTTP functions on one local port, at their API Gateway paths.
//!
//! Each request is turned into the `lambda_http::Request` that the Lambda runtime would build
//! (raw body bytes, a Lambda context with a deadline) and handed to the very router the function's
//! `main` passes to `lambda_http::run`.

use std::{convert::Infallible, net::SocketAddr, time::Duration};

use axum::Router;
use bytes::Bytes;
use http_body_util::{BodyExt, Full, Limited};
use hyper::{body::Incoming, server::conn::http1, service::service_fn};
use hyper_util::rt::TokioIo;
use lambda_http::RequestExt;
use tokio::{net::TcpListener, sync::watch};
use tower::ServiceExt;

/// API Gateway HTTP APIs accept payloads up to 10 MB.
const MAX_BODY: usize = 10 * 1024 * 1024;
/// Matches the functions' `Timeout` in template.yaml.
const FUNCTION_TIMEOUT: Duration = Duration::from_secs(30);

/// The routers of the two HTTP functions.
#[derive(Clone)]
pub struct HttpFunctions {
    /// `stripe-ingress`: `POST /webhooks/stripe`.
    pub ingress: Router,
    /// `api`: `/v1/*`, `/admin/*`, `/health`, `/openapi.json`, `/docs*` (everything else).
    pub api: Router,
}

impl HttpFunctions {
    /// Routes as the template's HttpApi does, then invokes the function's router.
    pub async fn invoke(&self, req: lambda_http::Request) -> http::Response<Bytes> {
        let router = if req.uri().path() == "/webhooks/stripe" {
            &self.ingress
        } else {
            &self.api
        };
        let res = router
            .clone()
            .oneshot(req)
            .await
            .unwrap_or_else(|never: Infallible| match never {});
        let (parts, body) = res.into_parts();
        let bytes = body
            .collect()
            .await
            .map(|c| c.to_bytes())
            .unwrap_or_default();
        http::Response::from_parts(parts, bytes)
    }
}

/// Builds the `lambda_http::Request` the runtime would hand the function.
pub fn lambda_request(parts: http::request::Parts, body: Bytes) -> lambda_http::Request {
    let body = if body.is_empty() {
        lambda_http::Body::Empty
    } else {
        lambda_http::Body::Binary(body.to_vec())
    };
    let mut context = lambda_runtime::Context::default();
    context.request_id = sluice::ids::new_id("req");
    context.deadline =
        (sluice::clock::now_epoch_millis() as u64) + FUNCTION_TIMEOUT.as_millis() as u64;
    lambda_http::Request::from_parts(parts, body).with_lambda_context(context)
}

async fn handle(
    functions: HttpFunctions,
    req: http::Request<Incoming>,
) -> Result<http::Response<Full<Bytes>>, Infallible> {
    let (parts, body) = req.into_parts();
    let body = match Limited::new(body, MAX_BODY).collect().await {
        Ok(collected) => collected.to_bytes(),
        Err(_) => {
            let mut res = http::Response::new(Full::new(Bytes::from_static(
                b"{\"message\":\"Request Entity Too Large\"}",
            )));
            *res.status_mut() = http::StatusCode::PAYLOAD_TOO_LARGE;
            return Ok(res);
        }
    };
    let res = functions.invoke(lambda_request(parts, body)).await;
    Ok(res.map(Full::new))
}

/// Serves until `shutdown` turns true.
pub async fn serve(
    listener: TcpListener,
    functions: HttpFunctions,
    mut shutdown: watch::Receiver<bool>,
) -> anyhow::Result<()> {
    loop {
        let (stream, _peer): (_, SocketAddr) = tokio::select! {
            accepted = listener.accept() => accepted?,
            _ = shutdown.changed() => return Ok(()),
        };
        let functions = functions.clone();
        tokio::spawn(async move {
            let service = service_fn(move |req| handle(functions.clone(), req));
            if let Err(err) = http1::Builder::new()
                .serve_connection(TokioIo::new(stream), service)
                .await
            {
                tracing::debug!(error = %err, "connection closed with an error");
            }
        });
    }
}

//! Stripe ingress: `POST /webhooks/stripe`.
//!
//! Order of work, so that nothing is stored for a rejected request: size limit (`413`), then the
//! signature over the raw bytes (`400` naming the cause), then the envelope (`400` if it is not a
//! Stripe event), then one transaction (see `sluice::stripe::process`). A processing failure
//! answers `500` so that Stripe retries.
//!
//! The route and its answer type ([`ReceivedOut`]) are annotated for OpenAPI: the API function's
//! document (`sluice_api::openapi`) includes them, so one document describes the whole gateway.
#![forbid(unsafe_code)]

use std::sync::Arc;

use axum::{
    Json, Router,
    body::Body,
    extract::State,
    http::HeaderMap,
    response::{IntoResponse, Response},
    routing::post,
};
use serde::Serialize;
use sluice::{
    ApiError, Config,
    aws::AwsClients,
    clock,
    config::ConfigError,
    stripe::{self, Outcome, Processor, signature, store::EventStatus},
    telemetry,
};
use tracing::Instrument;

/// Everything the handler needs, built once per cold start.
#[derive(Clone)]
pub struct IngressState {
    pub config: Arc<Config>,
    pub aws: AwsClients,
}

impl IngressState {
    /// Checks the settings this function cannot run without.
    pub fn new(config: Config, aws: AwsClients) -> Result<Self, ConfigError> {
        config.require_stripe_secrets()?;
        Ok(IngressState {
            config: Arc::new(config),
            aws,
        })
    }

    /// The processor over this function's table and queue.
    pub fn processor(&self) -> Processor<'_> {
        Processor {
            aws: &self.aws,
            table: &self.config.table_name,
            retention_days: self.config.stripe_event_retention_days,
        }
    }
}

/// The answer to an accepted Stripe event (stored now, or a redelivery of a stored one).
#[derive(Debug, Serialize, utoipa::ToSchema)]
#[schema(as = StripeWebhookReceived)]
pub struct ReceivedOut {
    /// Always `true`.
    pub received: bool,
    /// `true` on a redelivery of an event already stored: nothing changed.
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub duplicate: bool,
    /// Stripe's event id (`evt_…`).
    pub id: String,
    /// The stored status: `processed`, `ignored` or `unmatched` (a duplicate: its final status).
    pub status: EventStatus,
}

/// The ingress router, ready for `lambda_http::run` or a local server.
pub fn router(state: IngressState) -> Router {
    Router::new()
        .route("/webhooks/stripe", post(webhook))
        .fallback(|| async { ApiError::not_found("route") })
        // Every refusal is problem+json, also those axum makes (e.g. `405` for a `GET`).
        .layer(axum::middleware::map_response(
            sluice::error::problem_for_rejection,
        ))
        .with_state(state)
}

/// `POST /webhooks/stripe`: a Stripe event, verified on its raw bytes, stored once.
#[utoipa::path(
    post,
    path = "/webhooks/stripe",
    tag = "stripe",
    summary = "Receive a Stripe webhook event",
    description = "Register this URL in Stripe's dashboard. The body is verified against `Stripe-Signature` on its raw bytes before anything is stored; a refusal's `type` names the cause.",
    params(("Stripe-Signature" = String, Header, description = "Stripe's `t=…,v1=…` signature of the raw body")),
    request_body(content = Object, description = "A Stripe event (`object: event`), at most 1 MiB, as Stripe sends it"),
    responses(
        (status = 200, description = "Stored (or already stored: `duplicate`)", body = ReceivedOut),
        (status = 400, description = "Signature missing, malformed, not matching or out of tolerance; body not JSON or not a Stripe event"),
        (status = 413, description = "The body is over 1 MiB"),
        (status = 500, description = "Processing failed (stored `failed`) or AWS failed: Stripe retries"),
    ),
)]
pub async fn webhook(
    State(state): State<IngressState>,
    headers: HeaderMap,
    body: Body,
) -> Response {
    let span = tracing::info_span!(
        "stripe_webhook",
        stripe_event_id = tracing::field::Empty,
        event_type = tracing::field::Empty,
        status = tracing::field::Empty,
    );
    async move {
        let res = match handle(&state, &headers, body).await {
            Ok(res) => res,
            Err(err) => err.into_response(),
        };
        tracing::Span::current().record("status", res.status().as_u16());
        tracing::info!("handled");
        res
    }
    .instrument(span)
    .await
}

async fn handle(
    state: &IngressState,
    headers: &HeaderMap,
    body: Body,
) -> Result<Response, ApiError> {
    // lambda_http has already decoded a base64 body from API Gateway: these are the raw bytes.
    let raw = axum::body::to_bytes(body, signature::MAX_BODY_BYTES)
        .await
        .map_err(|_| {
            ApiError::payload_too_large(format!(
                "the body is larger than {} bytes",
                signature::MAX_BODY_BYTES
            ))
        })?;
    let header = match headers.get(signature::HEADER) {
        None => None,
        Some(v) => Some(v.to_str().map_err(|_| {
            ApiError::from(signature::SignatureError::Malformed("not visible ASCII"))
        })?),
    };
    signature::verify(
        header,
        &raw,
        &state.config.stripe_webhook_secrets,
        state.config.stripe_tolerance,
        clock::now_epoch(),
    )?;
    let event = stripe::decode(&raw)?;
    let span = tracing::Span::current();
    span.record("stripe_event_id", event.id.as_str());
    span.record("event_type", event.event_type.as_str());

    let outcome = state.processor().ingest(&event, &raw).await?;
    let status = match &outcome {
        Outcome::Done { status, .. } => status.as_str(),
        Outcome::Duplicate { .. } => "duplicate",
        Outcome::Failed { .. } => sluice::stripe::store::EventStatus::Failed.as_str(),
    };
    telemetry::emit(
        &telemetry::STRIPE_EVENTS,
        1.0,
        &[("EventType", &event.event_type), ("Status", status)],
    );
    match outcome {
        Outcome::Done { status, .. } => Ok(Json(ReceivedOut {
            received: true,
            duplicate: false,
            id: event.id,
            status,
        })
        .into_response()),
        Outcome::Duplicate { status } => Ok(Json(ReceivedOut {
            received: true,
            duplicate: true,
            id: event.id,
            status,
        })
        .into_response()),
        // Stored as failed; a 500 makes Stripe deliver it again.
        Outcome::Failed { error } => Err(ApiError::internal(anyhow::anyhow!(
            "stripe event {} failed: {error}",
            event.id
        ))),
    }
}

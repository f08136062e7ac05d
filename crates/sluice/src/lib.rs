//! Sluice core: everything the three functions share.
//!
//! Each module is one capability, testable on its own:
//! - [`config`]: typed settings read once from the environment.
//! - [`error`]: the one HTTP error type, rendered as RFC 9457 problem+json.
//! - [`aws`]: SDK clients built once from the standard AWS configuration chain.
//! - [`table`]: the single-table layout (key shapes, attribute helpers).
//! - [`ids`], [`clock`]: prefixed opaque ids and time.
//! - [`auth`], [`tenants`]: API keys, the admin key, tenant records.
//! - [`endpoints`]: the webhook endpoint entity (key, attributes, typed id, matching rule).
//! - [`outbound`]: the outbound event and its deliveries (keys, attributes, typed ids, attempts);
//!   [`fanout`] publishes them.
//! - [`idempotency`]: the idempotency `tower` layer (DynamoDB conditional writes).
//! - [`account`]: credits, usage debits, the ledger and monthly budget alerts.
//! - [`sealing`], [`ssrf`]: KMS-sealed secrets at rest, endpoint URL checks.
//! - [`telemetry`]: `tracing` set-up (JSON in Lambda) and CloudWatch EMF metric lines.
#![forbid(unsafe_code)]

pub mod account;
pub mod auth;
pub mod aws;
pub mod clock;
pub mod config;
pub mod endpoints;
pub mod error;
pub mod event_list;
pub mod event_types;
pub mod fanout;
pub mod idempotency;
pub mod ids;
pub mod outbound;
pub mod replay;
pub mod sealing;
pub mod ssrf;
pub mod stats;
pub mod stripe;
pub mod table;
pub mod telemetry;
pub mod tenants;
pub mod tls;
pub mod webhook_signature;

pub use config::Config;
pub use error::{ApiError, ApiResult};

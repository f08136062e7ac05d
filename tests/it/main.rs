//! End-to-end tests against the local AWS stack (moto), through the real AWS SDK.
//!
//! One test binary, one emulator process for it (started on first use, gone when the binary
//! exits); every test provisions its own table, queues and key, so tests run in parallel without
//! sharing state.

mod support;

mod billing;
mod browser;
mod egress;
mod event_types;
mod fanout;
mod idempotency;
mod localstripe;
mod openapi;
mod platform;
mod portal;
mod portal_api;
mod refusals;
mod sealing;

mod stripe_ingress;
mod stripe_standin;
mod tenant_api;

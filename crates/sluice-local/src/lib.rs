//! The local stack: what `make dev` runs and what the integration tests stand on.
//!
//! - [`iam`]: what each function's AWS requests need against what `template.yaml` grants.
//! - [`monitoring`]: the template's alarms and dashboard against the metrics the code emits.
//! - [`child`]: the project's Python servers (moto, localstripe) as child processes.
//! - [`emulator`]: moto's server as a child process on 127.0.0.1, installed on first use.
//! - [`localstripe`]: a stateful fake Stripe as a child process, for the tests.
//! - [`provision`]: the table, queues and KMS key, created from the definitions in `template.yaml`.
//! - [`server`]: the two HTTP functions on one port, at their API Gateway paths.
//! - [`poller`]: the egress function fed from SQS the way Lambda's event source mapping does.
//! - [`stream_poller`]: the egress function fed from the table's DynamoDB Stream (the outbox) the
//!   way Lambda's stream event source mapping does.
//! - [`trigger`]: signs a Stripe event file and POSTs it to the running stack.
//! - [`receiver`]: a development webhook endpoint that checks signatures (`sluice-local receive`).
#![forbid(unsafe_code)]

pub mod child;
pub mod counting;
pub mod dev;
pub mod emulator;
pub mod iam;
pub mod localstripe;
pub mod monitoring;
pub mod poller;
pub mod provision;
pub mod receiver;
pub mod server;
pub mod stream_poller;
pub mod trigger;

/// The repository root (the runner and the tests run from a checkout).
pub fn repo_root() -> std::path::PathBuf {
    std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../..")
        .canonicalize()
        .expect("repository root exists")
}

//! Stripe ingress: verification, decoding, tenant resolution and exactly-once processing.
//!
//! Shared by the ingress function (`POST /webhooks/stripe`) and the operator's
//! `POST /admin/stripe-events/{id}/retry`:
//! - [`signature`]: `Stripe-Signature` against the raw body, several secrets, constant time,
//!   tolerance on both sides of now.
//! - [`event`]: the envelope, and what each event type does ([`event::plan`], pure).
//! - [`process`]: one DynamoDB transaction per event (event item, effects, notifications,
//!   statistics), duplicates, guards, unmatched events and their later processing.
//! - [`store`]: the stored event item, its payload, and the operator's list/cleanup queries.

pub mod client;
pub mod event;
pub mod process;
pub mod signature;
pub mod store;

pub use event::{StripeEvent, decode};
pub use process::{Outcome, Processor};

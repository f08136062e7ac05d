//! The idempotency layer around a small axum service of its own: a counter whose
//! `POST /increment` must never count a retried request twice.
//!
//! Needs DynamoDB: the local emulator of `make dev` (or `infra/emulator.py`) will do.
//!
//! ```text
//! AWS_ENDPOINT_URL=http://127.0.0.1:4566 AWS_REGION=us-east-1 \
//! AWS_ACCESS_KEY_ID=test AWS_SECRET_ACCESS_KEY=test \
//!   cargo run -p sluice --example idempotency
//!
//! curl -si -X POST localhost:3001/increment -H 'Idempotency-Key: abc'   # 201 {"count":1}
//! curl -si -X POST localhost:3001/increment -H 'Idempotency-Key: abc'   # 201 {"count":1}, Idempotent-Replayed: true
//! curl -si -X POST localhost:3001/increment -H 'Idempotency-Key: abc' -d 'other body'   # 422
//! curl -si -X POST localhost:3001/increment                              # 201 {"count":2}: no key, no protection
//! curl -si localhost:3001/count                                          # {"count":2}
//! ```
//!
//! Keys are scoped by the `X-User` header here (a real service would use its authenticated
//! principal), so two users may use the same key. `EXAMPLE_PORT` (default 3001) and
//! `EXAMPLE_TABLE` (default `sluice-idempotency-example`, created if missing) are settings.

use std::{
    sync::{
        Arc,
        atomic::{AtomicU64, Ordering},
    },
    time::Duration,
};

use aws_sdk_dynamodb::types::{
    AttributeDefinition, BillingMode, KeySchemaElement, KeyType, ScalarAttributeType,
    TimeToLiveSpecification,
};
use axum::{
    Json, Router,
    extract::State,
    http::StatusCode,
    routing::{get, post},
};
use serde_json::{Value, json};
use sluice::idempotency::{IdempotencyLayer, Scope};

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let port: u16 = std::env::var("EXAMPLE_PORT")
        .ok()
        .map(|p| p.parse())
        .transpose()?
        .unwrap_or(3001);
    let table =
        std::env::var("EXAMPLE_TABLE").unwrap_or_else(|_| "sluice-idempotency-example".into());
    let db = aws_sdk_dynamodb::Client::new(&sluice::aws::load_sdk_config().await);
    ensure_table(&db, &table).await?;

    let counter = Arc::new(AtomicU64::new(0));
    let app = Router::new()
        .route("/increment", post(increment))
        .route("/count", get(count))
        .with_state(counter)
        .layer(
            IdempotencyLayer::new(
                db,
                &table,
                Scope::from_fn(|parts| {
                    let user = parts.headers.get("x-user").and_then(|v| v.to_str().ok());
                    Some(user.unwrap_or("anonymous").to_owned())
                }),
            )
            .ttl(Duration::from_secs(24 * 3600)),
        );

    let listener = tokio::net::TcpListener::bind(("127.0.0.1", port)).await?;
    println!("counter on http://127.0.0.1:{port} (table {table}); try:");
    println!("  curl -si -X POST localhost:{port}/increment -H 'Idempotency-Key: abc'");
    axum::serve(listener, app).await?;
    Ok(())
}

/// The effect a retry must not repeat.
async fn increment(State(counter): State<Arc<AtomicU64>>) -> (StatusCode, Json<Value>) {
    let n = counter.fetch_add(1, Ordering::SeqCst) + 1;
    (StatusCode::CREATED, Json(json!({ "count": n })))
}

async fn count(State(counter): State<Arc<AtomicU64>>) -> Json<Value> {
    Json(json!({ "count": counter.load(Ordering::SeqCst) }))
}

/// The layer needs a table with string keys `pk`/`sk` and TTL on `ttl`.
async fn ensure_table(db: &aws_sdk_dynamodb::Client, table: &str) -> anyhow::Result<()> {
    if db.describe_table().table_name(table).send().await.is_ok() {
        return Ok(());
    }
    let key = |name: &str, kind| {
        KeySchemaElement::builder()
            .attribute_name(name)
            .key_type(kind)
            .build()
    };
    let attr = |name: &str| {
        AttributeDefinition::builder()
            .attribute_name(name)
            .attribute_type(ScalarAttributeType::S)
            .build()
    };
    db.create_table()
        .table_name(table)
        .billing_mode(BillingMode::PayPerRequest)
        .key_schema(key("pk", KeyType::Hash)?)
        .key_schema(key("sk", KeyType::Range)?)
        .attribute_definitions(attr("pk")?)
        .attribute_definitions(attr("sk")?)
        .send()
        .await?;
    db.update_time_to_live()
        .table_name(table)
        .time_to_live_specification(
            TimeToLiveSpecification::builder()
                .attribute_name("ttl")
                .enabled(true)
                .build()?,
        )
        .send()
        .await?;
    Ok(())
}

//! Invocation events as Lambda delivers them: API Gateway HTTP API (payload 2.0) requests and SQS
//! batches, plus Stripe-signed webhook bodies.

use base64::{Engine, engine::general_purpose::STANDARD};
use serde_json::{Map, Value, json};

/// An API Gateway HTTP API (payload format 2.0) event.
pub fn http_event(method: &str, path: &str, headers: &[(&str, &str)], body: &[u8]) -> Vec<u8> {
    let headers: Map<String, Value> = headers
        .iter()
        .map(|(k, v)| (k.to_ascii_lowercase(), Value::from(*v)))
        .collect();
    let (body, encoded) = match std::str::from_utf8(body) {
        Ok(text) => (text.to_owned(), false),
        Err(_) => (STANDARD.encode(body), true),
    };
    serde_json::to_vec(&json!({
        "version": "2.0",
        "routeKey": "$default",
        "rawPath": path,
        "rawQueryString": "",
        "headers": headers,
        "requestContext": {
            "accountId": "123456789012",
            "apiId": "bench",
            "domainName": "bench.execute-api.us-east-1.amazonaws.com",
            "domainPrefix": "bench",
            "http": {
                "method": method,
                "path": path,
                "protocol": "HTTP/1.1",
                "sourceIp": "127.0.0.1",
                "userAgent": "sluice-bench"
            },
            "requestId": "bench",
            "routeKey": "$default",
            "stage": "$default",
            "time": "23/Nov/2026:00:00:00 +0000",
            "timeEpoch": 0
        },
        "body": body,
        "isBase64Encoded": encoded
    }))
    .expect("serializes")
}

/// An SQS event with one record per body.
pub fn sqs_event(queue_arn: &str, bodies: &[String]) -> Vec<u8> {
    let now_ms = sluice::clock::now_epoch_millis().to_string();
    let records: Vec<Value> = bodies
        .iter()
        .enumerate()
        .map(|(i, body)| {
            json!({
                "messageId": format!("bench-{i}-{}", sluice::ids::new_id("m")),
                "receiptHandle": format!("bench-receipt-{i}"),
                "body": body,
                "attributes": {
                    "ApproximateReceiveCount": "1",
                    "SentTimestamp": now_ms,
                    "SenderId": "bench",
                    "ApproximateFirstReceiveTimestamp": now_ms
                },
                "messageAttributes": {},
                "md5OfBody": "",
                "eventSource": "aws:sqs",
                "eventSourceARN": queue_arn,
                "awsRegion": "us-east-1"
            })
        })
        .collect();
    serde_json::to_vec(&json!({ "Records": records })).expect("serializes")
}

/// `Stripe-Signature` for `body` signed now with `secret`, as Stripe computes it.
pub fn stripe_signature(secret: &str, body: &[u8]) -> String {
    sluice::stripe::signature::sign(secret, sluice::clock::now_epoch(), body)
}

/// A `checkout.session.completed` (payment, paid) event crediting `amount` to `tenant_id`,
/// with fresh event, session and payment-intent ids.
pub fn checkout_paid(tenant_id: &str, amount: i64) -> Vec<u8> {
    let now = sluice::clock::now_epoch();
    serde_json::to_vec(&json!({
        "id": sluice::ids::new_id("evt"),
        "object": "event",
        "api_version": "2025-03-31.basil",
        "created": now,
        "livemode": false,
        "pending_webhooks": 1,
        "request": {"id": null, "idempotency_key": null},
        "type": "checkout.session.completed",
        "data": {"object": {
            "id": sluice::ids::new_id("cs_test"),
            "object": "checkout.session",
            "mode": "payment",
            "payment_status": "paid",
            "status": "complete",
            "amount_total": amount,
            "currency": "usd",
            "customer": sluice::ids::new_id("cus"),
            "client_reference_id": tenant_id,
            "metadata": {"tenant_id": tenant_id},
            "payment_intent": sluice::ids::new_id("pi"),
            "created": now
        }}
    }))
    .expect("serializes")
}

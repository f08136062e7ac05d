//! Every refusal is `application/problem+json` (RFC 9457), also the ones the framework makes
//! before or instead of a handler: unknown route, wrong method, body over axum's limit, a path
//! parameter that does not parse, a body that is not JSON. One test per kind, for both HTTP
//! functions where the kind can reach them. (No route of either function answers `415` or
//! rejects a query string through axum; `sluice::error`'s unit tests cover those kinds.)

use http::{Method, StatusCode};
use serde_json::json;
use tower::ServiceExt;

use crate::support::{Req, Res, Stack};

/// Sends `req` to the ingress function's router alone (the local gateway routes only
/// `/webhooks/stripe` to it).
async fn to_ingress(stack: &Stack, method: Method, path: &str) -> Res {
    let req = http::Request::builder()
        .method(method)
        .uri(path)
        .body(axum::body::Body::empty())
        .unwrap();
    let res = stack.ingress().oneshot(req).await.unwrap();
    let (parts, body) = res.into_parts();
    Res {
        status: parts.status,
        headers: parts.headers,
        body: axum::body::to_bytes(body, usize::MAX).await.unwrap(),
    }
}

fn problem_type(body: &serde_json::Value) -> &str {
    body["type"].as_str().unwrap()
}

#[tokio::test]
async fn a_body_over_the_limit_is_a_413_problem() {
    let stack = Stack::new().await;
    let (_, key) = stack.create_tenant("Acme").await;
    let big = format!(
        r#"{{"type":"a.b","data":"{}"}}"#,
        "x".repeat(3 * 1024 * 1024)
    );

    // Over axum's body limit, with and without an Idempotency-Key …
    for req in [
        Req::post("/v1/events").bearer(&key),
        Req::post("/v1/events").bearer(&key).idempotency_key("big"),
    ] {
        let res = stack
            .send(
                req.header("content-type", "application/json")
                    .body(big.clone()),
            )
            .await;
        let body = res.assert_problem(413);
        assert_eq!(
            problem_type(&body),
            sluice::error::problem_type_uri("payload-too-large")
        );
    }
    // … and the replay of the keyed one is the same problem.
    let again = stack
        .send(
            Req::post("/v1/events")
                .bearer(&key)
                .idempotency_key("big")
                .header("content-type", "application/json")
                .body(big.clone()),
        )
        .await;
    again.assert_problem(413);
    assert_eq!(again.header("idempotent-replayed"), Some("true"));

    // The ingress: over Stripe's 1 MiB.
    let res = stack
        .send(
            Req::post("/webhooks/stripe")
                .header("stripe-signature", "t=1,v1=00")
                .body(vec![b' '; 1024 * 1024 + 1]),
        )
        .await;
    res.assert_problem(413);
}

#[tokio::test]
async fn a_wrong_method_is_a_405_problem_that_still_says_what_is_allowed() {
    let stack = Stack::new().await;
    let (_, key) = stack.create_tenant("Acme").await;

    let res = stack.send(Req::get("/v1/usage").bearer(&key)).await;
    let body = res.assert_problem(405);
    assert_eq!(
        problem_type(&body),
        sluice::error::problem_type_uri("method-not-allowed")
    );
    assert_eq!(res.header("allow"), Some("POST"));

    let res = stack
        .send(Req::delete("/admin/tenants").admin(&stack.admin_key))
        .await;
    res.assert_problem(405);

    let res = stack.send(Req::get("/webhooks/stripe")).await;
    let body = res.assert_problem(405);
    assert_eq!(
        problem_type(&body),
        sluice::error::problem_type_uri("method-not-allowed")
    );
    assert_eq!(res.header("allow"), Some("POST"));
}

#[tokio::test]
async fn an_unknown_route_is_a_404_problem() {
    let stack = Stack::new().await;
    let (_, key) = stack.create_tenant("Acme").await;
    for res in [
        stack.send(Req::get("/nowhere")).await,
        stack.send(Req::get("/v1/nowhere").bearer(&key)).await,
        stack
            .send(Req::post("/admin/nowhere").admin(&stack.admin_key))
            .await,
        to_ingress(&stack, Method::POST, "/webhooks/nowhere").await,
    ] {
        let body = res.assert_problem(404);
        assert_eq!(
            problem_type(&body),
            sluice::error::problem_type_uri("not-found")
        );
    }
}

#[tokio::test]
async fn a_path_parameter_that_does_not_parse_is_a_400_problem() {
    let stack = Stack::new().await;
    let (_, key) = stack.create_tenant("Acme").await;
    // `%FF` decodes to a byte that is not UTF-8: axum's `Path<String>` rejects it.
    let res = stack.send(Req::get("/v1/endpoints/%FF").bearer(&key)).await;
    let body = res.assert_problem(400);
    assert_eq!(
        problem_type(&body),
        sluice::error::problem_type_uri("bad-request")
    );
}

#[tokio::test]
async fn a_body_that_is_not_json_is_a_400_problem_naming_the_cause() {
    let stack = Stack::new().await;
    let (_, key) = stack.create_tenant("Acme").await;
    let res = stack
        .send(
            Req::post("/v1/usage")
                .bearer(&key)
                .header("content-type", "application/json")
                .body("{not json"),
        )
        .await;
    let body = res.assert_problem(400);
    assert!(body["detail"].as_str().unwrap().contains("JSON"));

    let res = stack
        .send(
            Req::post("/v1/usage")
                .bearer(&key)
                .json(&json!({"amount_minor": "x"})),
        )
        .await;
    assert!(res.status.is_client_error());
    res.assert_problem(res.status.as_u16());
    assert_ne!(res.status, StatusCode::INTERNAL_SERVER_ERROR);
}

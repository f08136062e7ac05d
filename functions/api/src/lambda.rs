//! The API function's Lambda entry. Two kinds of invocation reach it:
//! - HTTP API events: handed to the router exactly as `lambda_http::run` would (its `Adapter`).
//! - The reconciliation schedule (EventBridge Scheduler, `template.yaml`'s `Reconcile` event,
//!   whose `Input` is [`SCHEDULED_SWEEP`]): runs [`admin::reconcile::sweep`] from the checkpoint,
//!   the code `POST /admin/stripe/reconcile` runs.
//!
//! Why not a function of its own: the sweep needs the Stripe client, the processor and the
//! admin route's code, which the API binary already holds; a fourth binary would add its size,
//! its build and its IAM policy for one call every 15 minutes. This entry adds a few hundred
//! bytes to the API binary and one small JSON probe per invocation (no AWS request).
//!
//! Only principals allowed `lambda:InvokeFunction` can send a non-HTTP payload: API Gateway
//! always sends its own envelope, whose top level a client cannot shape.

use axum::Router;
use lambda_http::{
    Adapter, LambdaEvent, Service, lambda_runtime, request::LambdaRequest, service_fn,
};
use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;
use sluice::ApiError;

use crate::{AppState, admin, admin::reconcile::Reconciled};

/// The payload the schedule sends (`Input` of the `Reconcile` event in `template.yaml`).
pub const SCHEDULED_SWEEP: &str = r#"{"sluice":"stripe-reconcile"}"#;
const SWEEP_TASK: &str = "stripe-reconcile";

/// What an invocation asks for.
#[derive(Debug)]
pub enum Invocation {
    /// The scheduled reconciliation sweep.
    Sweep,
    /// An HTTP request from API Gateway.
    Http(Box<LambdaRequest>),
}

/// Reads an invocation's payload: a scheduled task names itself in `sluice`; anything else must
/// be an HTTP API event.
pub fn invocation(payload: &str) -> Result<Invocation, lambda_http::Error> {
    #[derive(Deserialize)]
    struct Task<'a> {
        sluice: &'a str,
    }
    if let Ok(Task { sluice }) = serde_json::from_str::<Task>(payload) {
        return match sluice {
            SWEEP_TASK => Ok(Invocation::Sweep),
            other => Err(format!("unknown scheduled task {other:?}").into()),
        };
    }
    Ok(Invocation::Http(Box::new(serde_json::from_str(payload)?)))
}

/// An invocation's answer: the HTTP response for API Gateway, or what the sweep found.
#[derive(Serialize, Debug)]
#[serde(untagged)]
pub enum Reply<H> {
    Http(H),
    Sweep(Reconciled),
}

/// Answers one invocation. A failed sweep fails the invocation (Lambda's `Errors` metric and the
/// API errors alarm see it; the next scheduled run starts again from the checkpoint); its error
/// names the problem's type only, the details are in the log.
pub async fn handle(
    state: &AppState,
    router: Router,
    event: LambdaEvent<Box<RawValue>>,
) -> Result<Reply<impl Serialize + std::fmt::Debug + use<>>, lambda_http::Error> {
    let LambdaEvent { payload, context } = event;
    match invocation(payload.get())? {
        Invocation::Http(request) => {
            let mut http = Adapter::from(router);
            let res = http.call(LambdaEvent::new(*request, context)).await;
            Ok(Reply::Http(match res {
                Ok(r) => r,
                Err(never) => match never {},
            }))
        }
        Invocation::Sweep => {
            let found = admin::reconcile::sweep(state, None).await.map_err(|e| {
                tracing::error!(error = %e, "the scheduled reconciliation sweep failed");
                let what = match &e {
                    ApiError::Client { status, slug, .. } => format!("{status} {slug}"),
                    ApiError::Internal(_) => "an internal error (see the log)".to_owned(),
                };
                format!("the reconciliation sweep failed: {what}")
            })?;
            Ok(Reply::Sweep(found))
        }
    }
}

/// Serves invocations until the runtime stops (the binary's `main`).
pub async fn run(state: AppState) -> Result<(), lambda_http::Error> {
    let router = crate::router(state.clone());
    lambda_runtime::run(service_fn(move |event: LambdaEvent<Box<RawValue>>| {
        let (state, router) = (state.clone(), router.clone());
        async move { handle(&state, router, event).await }
    }))
    .await
}

#[cfg(test)]
mod tests {
    use super::*;

    /// An HTTP API (payload 2.0) event as API Gateway sends it, trimmed to what it always has.
    pub const HTTP_EVENT: &str = r#"{
        "version": "2.0", "routeKey": "$default", "rawPath": "/openapi.json", "rawQueryString": "",
        "headers": {"host": "api.example.com"},
        "requestContext": {
            "accountId": "123456789012", "apiId": "api", "domainName": "api.example.com",
            "domainPrefix": "api", "requestId": "req-1", "routeKey": "$default",
            "stage": "$default", "time": "02/Dec/2026:15:00:00 +0000", "timeEpoch": 1796223600000,
            "http": {"method": "GET", "path": "/openapi.json", "protocol": "HTTP/1.1",
                     "sourceIp": "192.0.2.1", "userAgent": "test"}
        },
        "isBase64Encoded": false
    }"#;

    #[test]
    fn the_schedules_payload_is_the_sweep_and_an_http_api_event_a_request() {
        assert!(matches!(invocation(SCHEDULED_SWEEP), Ok(Invocation::Sweep)));
        assert!(matches!(
            invocation(r#"{ "sluice": "stripe-reconcile", "extra": 1 }"#),
            Ok(Invocation::Sweep)
        ));
        let Ok(Invocation::Http(request)) = invocation(HTTP_EVENT) else {
            panic!("an HTTP API event is a request");
        };
        assert!(matches!(*request, LambdaRequest::ApiGatewayV2(_)));
        // A task this function does not know, or a payload that is neither: the invocation fails.
        assert!(invocation(r#"{"sluice":"rotate-keys"}"#).is_err());
        assert!(invocation(r#"{"detail-type":"Scheduled Event"}"#).is_err());
    }
}

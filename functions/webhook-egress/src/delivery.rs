//! One `Deliver` message: claim the delivery, sign, send, record the attempt.
//!
//! DynamoDB requests per delivery: a conditional `UpdateItem` that *claims* the delivery and a
//! `BatchGetItem` of the endpoint and the event, sent together; after the HTTP request one
//! conditional `UpdateItem` that records the attempt and the new status, beside the statistics
//! counter and (only when the endpoint's failure streak starts, ends or disables it) an endpoint
//! update.
//!
//! The claim is what makes a redelivered message send at most once successfully: it succeeds only
//! for the message's generation, while the delivery has not succeeded, and while no other
//! receiver holds an unexpired lease on it — so neither a late redelivery nor a concurrent
//! duplicate (SQS is at-least-once) sends again. The lease lasts the request timeout plus the
//! bookkeeping around it ([`sluice::Config::egress_lease`]), never longer than the function's
//! timeout, which is below the queue's visibility timeout: a receiver that crashed or timed out
//! mid-request blocks the delivery only until its message would come back anyway. No request
//! outlives its lease or the invocation ([`request_timeout`]); without time left, nothing is
//! sent and the message comes back after the queue's visibility timeout.

use std::time::{Duration, SystemTime};

use aws_sdk_dynamodb::{
    operation::update_item::UpdateItemError,
    types::{AttributeValue, KeysAndAttributes, ReturnValue, ReturnValuesOnConditionCheckFailure},
};
use http::{HeaderMap, HeaderValue};
use sluice::{
    clock, ids,
    outbound::{self, Attempt, OutboundEvent, attr, status},
    sealing::SealedEndpointSecret,
    table::{self, Item, ItemExt, n, s},
    telemetry, webhook_signature,
};

use crate::{
    EgressState,
    http::Exchange,
    retry::{self, Next},
};

/// Kept after a request, before the lease or the invocation ends, to record its outcome.
pub const AFTER_SEND_RESERVE: Duration = Duration::from_secs(5);
/// With less time than this left for the request, it is not sent.
pub const MIN_REQUEST_TIME: Duration = Duration::from_secs(1);
/// Attempts kept per delivery item: 400 KB is DynamoDB's item limit and each entry may carry a
/// 4 KiB response; older entries are dropped first (only many replays can get here).
pub const MAX_LOGGED_ATTEMPTS: usize = 50;

// The endpoint item's attributes and parsing live once, in `sluice::endpoints`.
use sluice::endpoints::{self, Endpoint, attr as endpoint_attr};

/// `disabled_reason` after a `410 Gone`.
pub const REASON_GONE: &str = "the endpoint answered 410 Gone";

/// What SQS told us about the message.
#[derive(Clone, Debug, Default)]
pub struct MessageMeta {
    /// 1-based (`ApproximateReceiveCount`): the attempt number.
    pub receive_count: u32,
    /// The invocation's deadline (Lambda's context), epoch milliseconds, if known.
    pub deadline_ms: Option<i64>,
}

/// How long the request may take, sent at `now_ms`: the configured timeout, shortened so that
/// [`AFTER_SEND_RESERVE`] is left before the invocation's deadline and before the lease ends.
/// `None` when less than [`MIN_REQUEST_TIME`] would be left: then it is not sent at all.
pub fn request_timeout(
    configured: Duration,
    now_ms: i64,
    deadline_ms: Option<i64>,
    lease_until_ms: i64,
) -> Option<Duration> {
    let reserve = AFTER_SEND_RESERVE.as_millis() as i64;
    let timeout = deadline_ms
        .into_iter()
        .chain([lease_until_ms])
        .map(|end| end.saturating_sub(now_ms).saturating_sub(reserve).max(0))
        .fold(configured, |timeout, left| {
            timeout.min(Duration::from_millis(left as u64))
        });
    (timeout >= MIN_REQUEST_TIME).then_some(timeout)
}

/// What becomes of the message.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Disposition {
    /// Finished: the message is deleted. The outcome names why (for logs and metrics).
    Done(&'static str),
    /// Not finished: reported as a batch item failure. With a delay the message becomes visible
    /// again after it; without, after the queue's visibility timeout.
    Retry {
        delay: Option<Duration>,
        outcome: &'static str,
    },
}

impl Disposition {
    /// The name logs and metrics use.
    pub fn outcome(&self) -> &'static str {
        match self {
            Disposition::Done(o) | Disposition::Retry { outcome: o, .. } => o,
        }
    }
}

/// The keys of one delivery.
#[derive(Clone, Copy, Debug)]
pub struct Target<'a> {
    pub tenant_id: &'a str,
    pub event_id: &'a str,
    pub endpoint_id: &'a str,
    pub generation: u32,
}

impl Target<'_> {
    fn delivery_key(&self) -> Item {
        outbound::delivery_key(self.tenant_id, self.event_id, self.endpoint_id)
    }
    fn endpoint_key(&self) -> Item {
        endpoints::key(self.tenant_id, self.endpoint_id)
    }
    fn event_key(&self) -> Item {
        outbound::event_key(self.tenant_id, self.event_id)
    }
}

enum Claim {
    /// We hold the lease (until `lease_until`, epoch seconds); the delivery item as it is now.
    Held {
        lease_id: String,
        lease_until: i64,
        delivery: Item,
    },
    /// Someone else decided the outcome, or must first.
    Declined(Disposition),
}

/// Processes one `Deliver` message. `Err` is an AWS failure: the message is retried after the
/// queue's visibility timeout.
pub async fn deliver(
    state: &EgressState,
    meta: &MessageMeta,
    target: Target<'_>,
) -> anyhow::Result<Disposition> {
    let (claim, reads) = tokio::join!(claim(state, target), read(state, target));
    let (lease_id, lease_until, delivery) = match claim? {
        Claim::Held {
            lease_id,
            lease_until,
            delivery,
        } => (lease_id, lease_until, delivery),
        Claim::Declined(disposition) => return Ok(disposition),
    };
    let (endpoint, event) = reads?;
    let record = Record {
        state,
        target,
        lease_id: &lease_id,
        delivery: &delivery,
    };

    let Some(event) = event.as_ref().and_then(OutboundEvent::from_item) else {
        // The event expired (its delivery item expires with it): nothing left to send.
        record.finish(status::FAILED, None, None).await?;
        return Ok(Disposition::Done("event_missing"));
    };
    let parsed = endpoint.and_then(|item| Some((Endpoint::from_item(&item)?, item)));
    let (endpoint, endpoint_item) = match parsed {
        Some((endpoint, item)) if endpoint.enabled => (endpoint, item),
        // Disabled (or deleted since the event was published): nothing is sent until it is
        // re-enabled and the event replayed.
        _ => {
            let (recorded, _) = tokio::join!(
                record.finish(status::ENDPOINT_DISABLED, None, None),
                count(state, status::ENDPOINT_DISABLED)
            );
            recorded?;
            return Ok(Disposition::Done(status::ENDPOINT_DISABLED));
        }
    };
    let url = endpoint.url.as_str();

    let now = clock::now_epoch();
    let keys = state
        .secrets
        .signing_keys(
            &state.sealer,
            target.tenant_id,
            target.endpoint_id,
            &SealedEndpointSecret::list_from_item(&endpoint_item),
            now,
        )
        .await?;
    let body = event.wire_body();
    let signature = webhook_signature::sign(&keys, &event.id, now, body.as_bytes());
    let mut headers = HeaderMap::new();
    headers.insert(
        webhook_signature::HEADER_ID,
        HeaderValue::from_str(&event.id)?,
    );
    headers.insert(webhook_signature::HEADER_TIMESTAMP, HeaderValue::from(now));
    headers.insert(
        webhook_signature::HEADER_SIGNATURE,
        HeaderValue::from_str(&signature)?,
    );

    let Some(timeout) = request_timeout(
        state.config.egress_timeout,
        clock::now_epoch_millis(),
        meta.deadline_ms,
        lease_until.saturating_mul(1000),
    ) else {
        // Not sent, so not an attempt: the lease expires before the message comes back.
        tracing::warn!("too little time left in the invocation or the lease to send");
        return Ok(Disposition::Retry {
            delay: None,
            outcome: "out_of_time",
        });
    };
    let exchange = state.http.post(url, headers, body.into(), timeout).await;
    telemetry::emit(
        &telemetry::DELIVERY_LATENCY,
        exchange.duration.as_secs_f64() * 1000.0,
        &[],
    );
    let attempt = Attempt {
        at: now,
        generation: target.generation,
        attempt: meta.receive_count.max(1),
        status_code: exchange.status,
        error: exchange.error.map(|e| e.as_str().to_owned()),
        duration_ms: exchange.duration.as_millis() as u64,
        response: exchange.response_excerpt.clone(),
    };
    tracing::info!(
        attempt = attempt.attempt,
        status_code = exchange.status,
        error = exchange.error.map(|e| e.as_str()),
        duration_ms = attempt.duration_ms,
        "delivery attempt"
    );

    let failing_since = endpoint.failing_since;
    if exchange.is_success() {
        let (recorded, endpoint_updated, _) = tokio::join!(
            record.finish(status::SUCCEEDED, Some(&attempt), None),
            async {
                match failing_since {
                    Some(_) => clear_failure_streak(state, target).await,
                    None => Ok(()),
                }
            },
            count(state, status::SUCCEEDED)
        );
        log_endpoint_error(endpoint_updated);
        // The endpoint has it: never send again, even if the bookkeeping failed.
        if let Err(err) = recorded {
            tracing::error!(error = %format!("{err:#}"), "recording a successful delivery failed");
        }
        return Ok(Disposition::Done(status::SUCCEEDED));
    }

    // A failure. 410 and a streak longer than the configured hours disable the endpoint; the
    // delivery is then `failed` (a replay after re-enabling sends it again).
    let disable = if exchange.status == Some(410) {
        Some(REASON_GONE.to_owned())
    } else {
        let hours = state.config.egress_disable_after_hours;
        failing_since
            .filter(|since| now - since > i64::from(hours) * 3600)
            .map(|_| format!("no successful delivery for {hours} hours"))
    };
    let next = match disable {
        Some(_) => Next::GiveUp,
        None => state
            .retry
            .after_failure(meta.receive_count.max(1), retry_after(&exchange)),
    };
    let (new_status, next_attempt_at, disposition) = match next {
        Next::RetryAfter(delay) => (
            status::PENDING,
            Some(now + delay.as_secs() as i64),
            Disposition::Retry {
                delay: Some(delay),
                outcome: "retried",
            },
        ),
        // The message goes to the DLQ (visible at once, so the next receive moves it) unless
        // the endpoint was just disabled: then there is nothing to keep it for.
        // Outcome `failed` (the `Deliveries` metric) is what the exhausted-deliveries alarm sees.
        Next::GiveUp if disable.is_some() => {
            (status::FAILED, None, Disposition::Done(status::FAILED))
        }
        Next::GiveUp => (
            status::FAILED,
            None,
            Disposition::Retry {
                delay: Some(Duration::ZERO),
                outcome: status::FAILED,
            },
        ),
    };
    let (recorded, endpoint_updated, _) = tokio::join!(
        record.finish(new_status, Some(&attempt), next_attempt_at),
        async {
            match (&disable, failing_since) {
                (Some(reason), _) => {
                    disable_endpoint(state, target, reason, url, failing_since).await
                }
                (None, None) => start_failure_streak(state, target, now).await,
                (None, Some(_)) => Ok(()),
            }
        },
        count(state, disposition.outcome())
    );
    log_endpoint_error(endpoint_updated);
    if let Err(err) = recorded {
        tracing::error!(error = %format!("{err:#}"), "recording a failed attempt failed");
    }
    if let Some(reason) = &disable {
        tracing::warn!(reason = reason.as_str(), "endpoint disabled");
    }
    Ok(disposition)
}

/// `Retry-After` counts on 429 and 503 only (RFC 9110 gives it meaning there and on 3xx, which
/// are not followed).
fn retry_after(exchange: &Exchange) -> Option<Duration> {
    match exchange.status {
        Some(429 | 503) => exchange
            .retry_after
            .as_deref()
            .and_then(|v| retry::parse_retry_after(v, SystemTime::now())),
        _ => None,
    }
}

async fn claim(state: &EgressState, target: Target<'_>) -> anyhow::Result<Claim> {
    let now = clock::now_epoch();
    let lease_id = ids::new_id("lease");
    let lease_until = now + state.config.egress_lease().as_secs() as i64;
    let result = state
        .aws
        .dynamodb
        .update_item()
        .table_name(&state.config.table_name)
        .set_key(Some(target.delivery_key()))
        .update_expression("SET #lease_id = :lease, #lease_until = :until")
        .condition_expression(
            "#gen = :gen AND #status <> :succeeded \
             AND (attribute_not_exists(#lease_until) OR #lease_until < :now)",
        )
        .expression_attribute_names("#lease_id", attr::LEASE_ID)
        .expression_attribute_names("#lease_until", attr::LEASE_UNTIL)
        .expression_attribute_names("#gen", attr::GENERATION)
        .expression_attribute_names("#status", attr::STATUS)
        .expression_attribute_values(":lease", s(lease_id.as_str()))
        .expression_attribute_values(":until", n(lease_until))
        .expression_attribute_values(":gen", n(target.generation))
        .expression_attribute_values(":succeeded", s(status::SUCCEEDED))
        .expression_attribute_values(":now", n(now))
        .return_values(ReturnValue::AllNew)
        .return_values_on_condition_check_failure(ReturnValuesOnConditionCheckFailure::AllOld)
        .send()
        .await;
    let old = match result {
        Ok(out) => {
            return Ok(Claim::Held {
                lease_id,
                lease_until,
                delivery: out.attributes.unwrap_or_default(),
            });
        }
        Err(err) => match err.as_service_error() {
            Some(UpdateItemError::ConditionalCheckFailedException(e)) => e.item().cloned(),
            _ => return Err(sluice::ApiError::from(err).into()),
        },
    };
    let generation = old.as_ref().and_then(|item| item.get_i64(attr::GENERATION));
    let disposition = match (old, generation) {
        // No item, or not the generation this message was sent for. Never by Sluice's own
        // writers: the outbox relay sends a `Deliver` only after its delivery is written, and a
        // replay only after its generation bump; only an item deleted since (retention, by
        // hand) gets here, and nothing is left to send.
        (None, _) | (Some(_), None) => {
            tracing::warn!("no delivery item for this message; dropped");
            Disposition::Done("missing")
        }
        (Some(_), Some(g)) if g < i64::from(target.generation) => {
            tracing::warn!(
                generation = g,
                "the delivery is behind this message; dropped"
            );
            Disposition::Done("missing")
        }
        (Some(_), Some(g)) if g > i64::from(target.generation) => Disposition::Done("superseded"),
        (Some(item), Some(_)) => {
            if item.get_s(attr::STATUS) == Some(status::SUCCEEDED) {
                Disposition::Done("duplicate")
            } else {
                // Another receiver is sending it right now: look again once its lease is over.
                let until = item.get_i64(attr::LEASE_UNTIL).unwrap_or(now);
                Disposition::Retry {
                    delay: Some(Duration::from_secs((until - now).clamp(1, 900) as u64 + 1)),
                    outcome: "in_flight",
                }
            }
        }
    };
    Ok(Claim::Declined(disposition))
}

/// The endpoint and the event, in one strongly consistent `BatchGetItem`.
async fn read(
    state: &EgressState,
    target: Target<'_>,
) -> anyhow::Result<(Option<Item>, Option<Item>)> {
    let table_name = &state.config.table_name;
    let mut keys = KeysAndAttributes::builder()
        .keys(target.endpoint_key())
        .keys(target.event_key())
        .consistent_read(true)
        .build()?;
    let (mut endpoint, mut event) = (None, None);
    // Unprocessed keys come back under throttling; a few quick rounds, then give up (retry).
    for round in 0..3 {
        let out = state
            .aws
            .dynamodb
            .batch_get_item()
            .request_items(table_name, keys.clone())
            .send()
            .await
            .map_err(sluice::ApiError::from)?;
        for item in out
            .responses()
            .and_then(|r| r.get(table_name))
            .into_iter()
            .flatten()
        {
            match item.get_s(table::SK) {
                Some(sk) if sk.starts_with(endpoints::SK_PREFIX) => endpoint = Some(item.clone()),
                Some(sk) if sk.starts_with(outbound::EVENT_SK_PREFIX) => event = Some(item.clone()),
                _ => {}
            }
        }
        match out.unprocessed_keys().and_then(|u| u.get(table_name)) {
            Some(rest) if !rest.keys().is_empty() => {
                keys = rest.clone();
                tokio::time::sleep(Duration::from_millis(50 << round)).await;
            }
            _ => return Ok((endpoint, event)),
        }
    }
    anyhow::bail!("BatchGetItem left keys unprocessed")
}

/// The one conditional write that records an attempt (or a decision not to send) and releases
/// the lease.
struct Record<'a> {
    state: &'a EgressState,
    target: Target<'a>,
    lease_id: &'a str,
    delivery: &'a Item,
}

impl Record<'_> {
    async fn finish(
        &self,
        new_status: &str,
        attempt: Option<&Attempt>,
        next_attempt_at: Option<i64>,
    ) -> anyhow::Result<()> {
        let now = clock::now_epoch();
        let mut set = vec!["#status = :status", "#updated = :now"];
        let mut remove = vec!["#lease_id", "#lease_until"];
        let mut req = self
            .state
            .aws
            .dynamodb
            .update_item()
            .table_name(&self.state.config.table_name)
            .set_key(Some(self.target.delivery_key()))
            .condition_expression("#lease_id = :lease AND #gen = :gen")
            .expression_attribute_names("#status", attr::STATUS)
            .expression_attribute_names("#updated", attr::UPDATED_AT)
            .expression_attribute_names("#lease_id", attr::LEASE_ID)
            .expression_attribute_names("#lease_until", attr::LEASE_UNTIL)
            .expression_attribute_names("#gen", attr::GENERATION)
            .expression_attribute_names("#next", attr::NEXT_ATTEMPT_AT)
            .expression_attribute_values(":status", s(new_status))
            .expression_attribute_values(":now", n(now))
            .expression_attribute_values(":lease", s(self.lease_id))
            .expression_attribute_values(":gen", n(self.target.generation));
        if let Some(attempt) = attempt {
            set.extend([
                "#count = if_not_exists(#count, :zero) + :one",
                "#last = :now",
            ]);
            req = req
                .expression_attribute_names("#count", attr::ATTEMPT_COUNT)
                .expression_attribute_names("#last", attr::LAST_ATTEMPT_AT)
                .expression_attribute_names("#attempts", attr::ATTEMPTS)
                .expression_attribute_values(":zero", n(0))
                .expression_attribute_values(":one", n(1));
            let logged = match self.delivery.get(attr::ATTEMPTS) {
                Some(AttributeValue::L(list)) => list.as_slice(),
                _ => &[],
            };
            if logged.len() >= MAX_LOGGED_ATTEMPTS {
                let keep = &logged[logged.len() + 1 - MAX_LOGGED_ATTEMPTS..];
                let mut list = keep.to_vec();
                list.push(attempt.to_attribute());
                set.push("#attempts = :attempts");
                req = req.expression_attribute_values(":attempts", AttributeValue::L(list));
            } else {
                set.push("#attempts = list_append(if_not_exists(#attempts, :empty), :attempt)");
                req = req
                    .expression_attribute_values(":empty", AttributeValue::L(Vec::new()))
                    .expression_attribute_values(
                        ":attempt",
                        AttributeValue::L(vec![attempt.to_attribute()]),
                    );
            }
        }
        match next_attempt_at {
            Some(at) => {
                set.push("#next = :next");
                req = req.expression_attribute_values(":next", n(at));
            }
            None => remove.push("#next"),
        }
        if new_status == status::SUCCEEDED {
            set.push("#succeeded = :gen");
            req = req.expression_attribute_names("#succeeded", attr::SUCCEEDED_GENERATION);
        }
        let expression = format!("SET {} REMOVE {}", set.join(", "), remove.join(", "));
        match req.update_expression(expression).send().await {
            Ok(_) => Ok(()),
            Err(err)
                if matches!(
                    err.as_service_error(),
                    Some(UpdateItemError::ConditionalCheckFailedException(_))
                ) =>
            {
                // A replay moved the delivery to a new generation while we were sending; that
                // generation's message carries on.
                tracing::info!("the delivery was replayed while this attempt was in flight");
                Ok(())
            }
            Err(err) => Err(sluice::ApiError::from(err).into()),
        }
    }
}

/// Endpoint updates are conditioned on the endpoint still existing, so a deleted endpoint is
/// never recreated as a fragment.
fn endpoint_update(
    state: &EgressState,
    target: Target<'_>,
) -> aws_sdk_dynamodb::operation::update_item::builders::UpdateItemFluentBuilder {
    state
        .aws
        .dynamodb
        .update_item()
        .table_name(&state.config.table_name)
        .set_key(Some(target.endpoint_key()))
}

async fn start_failure_streak(
    state: &EgressState,
    target: Target<'_>,
    now: i64,
) -> anyhow::Result<()> {
    let result = endpoint_update(state, target)
        .update_expression("SET #since = if_not_exists(#since, :now)")
        .condition_expression("attribute_exists(pk)")
        .expression_attribute_names("#since", endpoint_attr::FAILING_SINCE)
        .expression_attribute_values(":now", n(now))
        .send()
        .await;
    ignore_condition_failure(result)
}

async fn clear_failure_streak(state: &EgressState, target: Target<'_>) -> anyhow::Result<()> {
    let result = endpoint_update(state, target)
        .update_expression("REMOVE #since")
        .condition_expression("attribute_exists(pk)")
        .expression_attribute_names("#since", endpoint_attr::FAILING_SINCE)
        .send()
        .await;
    ignore_condition_failure(result)
}

/// Disables the endpoint — unless, since it was read, its URL changed (a 410 from the old URL
/// says nothing about the new one) or it was re-enabled (which clears the failure streak).
async fn disable_endpoint(
    state: &EgressState,
    target: Target<'_>,
    reason: &str,
    url: &str,
    failing_since: Option<i64>,
) -> anyhow::Result<()> {
    let mut req = endpoint_update(state, target)
        .update_expression("SET #enabled = :false, #reason = :reason, #at = :now")
        .expression_attribute_names("#enabled", endpoint_attr::ENABLED)
        .expression_attribute_names("#reason", endpoint_attr::DISABLED_REASON)
        .expression_attribute_names("#at", endpoint_attr::DISABLED_AT)
        .expression_attribute_names("#url", endpoint_attr::URL)
        .expression_attribute_values(":false", table::b(false))
        .expression_attribute_values(":reason", s(reason))
        .expression_attribute_values(":now", n(clock::now_epoch()))
        .expression_attribute_values(":url", s(url));
    req = match failing_since {
        Some(since) if reason != REASON_GONE => req
            .condition_expression("attribute_exists(pk) AND #url = :url AND #since = :since")
            .expression_attribute_names("#since", endpoint_attr::FAILING_SINCE)
            .expression_attribute_values(":since", n(since)),
        _ => req.condition_expression("attribute_exists(pk) AND #url = :url"),
    };
    ignore_condition_failure(req.send().await)
}

fn ignore_condition_failure<T>(
    result: Result<T, aws_sdk_dynamodb::error::SdkError<UpdateItemError>>,
) -> anyhow::Result<()> {
    match result {
        Ok(_) => Ok(()),
        Err(err)
            if matches!(
                err.as_service_error(),
                Some(UpdateItemError::ConditionalCheckFailedException(_))
            ) =>
        {
            Ok(())
        }
        Err(err) => Err(sluice::ApiError::from(err).into()),
    }
}

fn log_endpoint_error(result: anyhow::Result<()>) {
    if let Err(err) = result {
        tracing::error!(error = %format!("{err:#}"), "updating the endpoint's failure streak failed");
    }
}

/// Counts the outcome in the hourly statistics; a failure is logged, never retried (the
/// delivery itself is what matters).
async fn count(state: &EgressState, outcome: &str) {
    if let Err(err) = sluice::stats::record_delivery_outcome(
        &state.aws.dynamodb,
        &state.config.table_name,
        outcome,
    )
    .await
    {
        tracing::warn!(error = %err, outcome, "counting a delivery outcome failed");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn no_request_outlives_the_invocation_or_the_lease() {
        let configured = Duration::from_secs(15);
        let now = 1_000_000_i64;
        let secs = |s: i64| now + s * 1000;
        // Plenty of time: the configured timeout.
        assert_eq!(
            request_timeout(configured, now, Some(secs(40)), secs(30)),
            Some(configured)
        );
        // No deadline known (local runner): only the lease bounds it.
        assert_eq!(
            request_timeout(configured, now, None, secs(30)),
            Some(configured)
        );
        // 12 s left in the invocation: 7 s for the request, 5 s to record it.
        assert_eq!(
            request_timeout(configured, now, Some(secs(12)), secs(30)),
            Some(Duration::from_secs(7))
        );
        // The lease (claimed earlier, slow KMS meanwhile) ends first.
        assert_eq!(
            request_timeout(configured, now, Some(secs(40)), secs(9)),
            Some(Duration::from_secs(4))
        );
        // Too little left, or already past: not sent.
        assert_eq!(
            request_timeout(configured, now, Some(secs(5)), secs(30)),
            None
        );
        assert_eq!(
            request_timeout(configured, now, Some(secs(-3)), secs(30)),
            None
        );
        assert_eq!(request_timeout(configured, now, None, secs(2)), None);
    }

    #[test]
    fn the_lease_ends_within_the_function_timeout_for_every_allowed_setting() {
        use sluice::config::{EGRESS_FUNCTION_TIMEOUT, EGRESS_TIMEOUT_MAX};
        for secs in 1..=EGRESS_TIMEOUT_MAX.as_secs() {
            let config = sluice::Config::from_lookup(|name| match name {
                "EGRESS_TIMEOUT_SECS" => Some(secs.to_string()),
                "TABLE_NAME" | "QUEUE_URL" | "KMS_KEY_ID" => Some("x".into()),
                _ => None,
            })
            .unwrap();
            let lease = config.egress_lease();
            assert!(lease <= EGRESS_FUNCTION_TIMEOUT, "{lease:?}");
            // A request sent right after the claim gets its full configured time.
            let now = 0;
            assert_eq!(
                request_timeout(config.egress_timeout, now, None, lease.as_millis() as i64),
                Some(config.egress_timeout)
            );
        }
    }
}

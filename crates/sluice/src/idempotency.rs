//! Idempotent HTTP writes: a `tower` layer backed by DynamoDB conditional writes.
//!
//! Wrap any axum or `lambda_http` service in [`IdempotencyLayer`] and every `POST`, `PUT`,
//! `PATCH` and `DELETE` that carries an `Idempotency-Key` header (alias `X-Idempotency-Key`) runs
//! at most once per scope and key; a retry gets the first answer back, byte for byte.
//!
//! | case | answer |
//! |---|---|
//! | key of 1–255 visible ASCII characters | used; the record is `IDEM#{scope}#{key}` |
//! | key malformed (or the two headers disagree) | `400` |
//! | no key | the request runs normally (`400` when the layer is [`required`](IdempotencyLayer::required)) |
//! | first request | runs; status, `content-type`, `location`, `retry-after` and body are stored |
//! | same key and fingerprint, completed | the stored response with `Idempotent-Replayed: true`: **one** DynamoDB request |
//! | same key, different fingerprint | `422` |
//! | same key while the first still runs | `409` with `Retry-After` |
//! | first answered 5xx, panicked, failed or timed out | record released: the client may retry |
//! | first answered "retry later" (`408`, `425`, `429`, a 4xx with `Retry-After`) | record released: the retry can succeed |
//! | first committed, but its answer was lost (timeout, 5xx after DynamoDB applied it) | record kept: the retry replays it |
//!
//! How it works, and why it is cheap:
//! - **Lock** = one conditional `PutItem` of an `in_progress` record holding the request's
//!   fingerprint (SHA-256 over method, path, query and body, each length-prefixed) and a random
//!   lock token. Its condition lets it overwrite only an absent record, an expired one (`ttl`
//!   passed: expired records are treated as absent before DynamoDB's TTL sweep removes them) or an
//!   `in_progress` one whose lock has expired. On failure DynamoDB returns the existing record
//!   (`ReturnValuesOnConditionCheckFailure=ALL_OLD`), so a replay needs no second read.
//! - The lock expires at the Lambda deadline (from the `lambda_http` request context; 30 s
//!   without one), so a crashed or timed-out request never blocks its key for long.
//! - **Save or release** is decided by [`outcome`]: a 2xx–4xx is an answer, stored and replayed
//!   as Stripe does, except an answer that asks the client to come back (`408`, `425`, `429`, any
//!   4xx carrying `Retry-After`, such as `409` "changed concurrently"): kept, it would refuse every
//!   retry with that key for the record's whole life. 5xx, panics and service errors release.
//! - Save and release are conditioned on the lock token **and** on the record still being
//!   `in_progress`: a late writer whose lock expired and was taken over changes nothing, and a
//!   completed record is never deleted, so an answer whose commit DynamoDB applied but whose
//!   response was lost (the handler then answers 5xx) is replayed to the retry, never run twice.
//! - **Commit with the effect**: a handler whose effect is a DynamoDB write finds an
//!   [`IdempotencyLock`] in its request extensions and passes it to [`commit_with_response`],
//!   which appends the record's completion to the handler's own `TransactWriteItems`. Effect and
//!   stored answer then commit together, and a first request costs two DynamoDB requests in all
//!   (lock, then effect + completion) instead of three.
//! - **Commits survive a lost response**: the transaction carries a `ClientRequestToken` derived
//!   from the lock token (and the commit's number within the request), so the SDK's own retries
//!   and our one resend after an ambiguous failure (timeout, transport error, DynamoDB 5xx) are
//!   the same request to DynamoDB (idempotent for 10 minutes). Should DynamoDB see a resend as new
//!   anyway (the local emulator ignores the token), the completion's condition fails on the
//!   record our first attempt completed; its `ALL_OLD` copy shows our lock token, so the commit is
//!   known to have applied and its answer is given. Either way the effect is written once.
//! - **Secrets in answers**: a response that issues a secret (an API key, a signing secret) is
//!   marked [`SealStoredBody`]; its stored copy is encrypted by the layer's [`BodySealer`] (Sluice
//!   uses KMS), and without a sealer it is not stored at all.
//!
//! The scope keeps callers apart: Sluice scopes tenant routes by the authenticated tenant id
//! ([`Scope::tenant`]) and operator routes by a constant ([`Scope::fixed`]), so two tenants using
//! the same key make two different requests.
//!
//! # Example
//!
//! `crates/sluice/examples/idempotency.rs` wraps a small axum service of its own (a counter whose
//! `POST /increment` must not count twice). With the local emulator running (`make dev` serves it
//! on port 4566), run:
//!
//! ```text
//! AWS_ENDPOINT_URL=http://127.0.0.1:4566 AWS_REGION=us-east-1 \
//! AWS_ACCESS_KEY_ID=test AWS_SECRET_ACCESS_KEY=test \
//!   cargo run -p sluice --example idempotency
//! curl -si -X POST localhost:3001/increment -H 'Idempotency-Key: abc'   # 201 {"count":1}
//! curl -si -X POST localhost:3001/increment -H 'Idempotency-Key: abc'   # the same, replayed
//! curl -si -X POST localhost:3001/increment -H 'Idempotency-Key: abc' -d x   # 422
//! ```
//!
//! In a service of your own:
//!
//! ```no_run
//! # async fn demo(db: aws_sdk_dynamodb::Client) {
//! use std::time::Duration;
//! use axum::{Router, routing::post};
//! use sluice::idempotency::{IdempotencyLayer, Scope};
//!
//! let app: Router = Router::new()
//!     .route("/orders", post(|| async { "created" }))
//!     .layer(
//!         IdempotencyLayer::new(db, "my-table", Scope::fixed("orders"))
//!             .ttl(Duration::from_secs(7 * 86_400)),
//!     );
//! # let _ = app;
//! # }
//! ```

use std::{
    panic::AssertUnwindSafe,
    sync::{
        Arc,
        atomic::{AtomicBool, AtomicU32, Ordering},
    },
    task::{Context, Poll},
    time::Duration,
};

use aws_sdk_dynamodb::{
    Client,
    error::SdkError,
    operation::{
        put_item::PutItemError, transact_write_items::TransactWriteItemsError,
        update_item::UpdateItemError,
    },
    types::{CancellationReason, ReturnValuesOnConditionCheckFailure, TransactWriteItem, Update},
};
use axum::{body::Body, response::IntoResponse};
use bytes::Bytes;
use futures::{FutureExt, future::BoxFuture};
use http::{HeaderMap, HeaderName, HeaderValue, Method, Request, Response, StatusCode, header};
use http_body_util::{BodyExt, Limited};
use sha2::{Digest, Sha256};
use tower::{Layer, Service};

use crate::{
    ApiError, clock, ids,
    table::{self, Item, ItemExt, UpdateBuilder, bin, n, s},
};

/// The request header naming the idempotency key.
pub const IDEMPOTENCY_KEY: &str = "idempotency-key";
/// Accepted alias of [`IDEMPOTENCY_KEY`].
pub const X_IDEMPOTENCY_KEY: &str = "x-idempotency-key";
/// Response header marking a replayed answer.
pub const IDEMPOTENT_REPLAYED: &str = "idempotent-replayed";
/// Longest accepted key.
pub const MAX_KEY_LEN: usize = 255;
/// Sort key of every idempotency record.
pub const RECORD_SK: &str = "IDEM";
/// Largest response body stored for replay: DynamoDB items are at most 400 KB.
pub const MAX_STORED_BODY: usize = 300 * 1024;

/// How long an `in_progress` record holds its key when the request has no Lambda deadline.
const DEFAULT_LOCK_TIMEOUT: Duration = Duration::from_secs(30);
/// Lambda's largest request payload: bodies are buffered to fingerprint them.
const DEFAULT_MAX_BODY: usize = 6 * 1024 * 1024;

/// Attribute names of an idempotency record.
pub mod attr {
    pub const STATUS: &str = "status";
    pub const FINGERPRINT: &str = "fingerprint";
    pub const LOCK_TOKEN: &str = "lock_token";
    pub const LOCK_EXPIRES_AT_MS: &str = "lock_expires_at";
    pub const CREATED_AT: &str = "created_at";
    pub const RESPONSE_STATUS: &str = "response_status";
    pub const RESPONSE_CONTENT_TYPE: &str = "response_content_type";
    pub const RESPONSE_LOCATION: &str = "response_location";
    pub const RESPONSE_RETRY_AFTER: &str = "response_retry_after";
    pub const RESPONSE_BODY: &str = "response_body";
    /// True when `response_body` is encrypted by the layer's sealer.
    pub const RESPONSE_SEALED: &str = "response_sealed";
    pub const IN_PROGRESS: &str = "in_progress";
    pub const COMPLETED: &str = "completed";
}

/// `IDEM#{scope}#{key}`: the partition key of a record.
pub fn record_pk(scope: &str, key: &str) -> String {
    format!("IDEM#{scope}#{key}")
}

/// The request's idempotency key: `Ok(None)` without one, `400` when malformed.
pub fn key_from_headers(headers: &HeaderMap) -> Result<Option<String>, ApiError> {
    let mut found: Option<&HeaderValue> = None;
    for name in [IDEMPOTENCY_KEY, X_IDEMPOTENCY_KEY] {
        for value in headers.get_all(name) {
            if found.is_some_and(|f| f != value) {
                return Err(ApiError::bad_request(
                    "conflicting Idempotency-Key headers: send one key",
                ));
            }
            found = Some(value);
        }
    }
    let Some(value) = found else {
        return Ok(None);
    };
    let bytes = value.as_bytes();
    if bytes.is_empty()
        || bytes.len() > MAX_KEY_LEN
        || !bytes.iter().all(|b| (0x21..=0x7e).contains(b))
    {
        return Err(ApiError::bad_request(format!(
            "Idempotency-Key must be 1–{MAX_KEY_LEN} visible ASCII characters"
        )));
    }
    // Only visible ASCII remains, so this is valid UTF-8.
    Ok(Some(String::from_utf8_lossy(bytes).into_owned()))
}

/// SHA-256 over method, path, query and body, each length-prefixed so that no two different
/// requests share a byte stream.
pub fn fingerprint(method: &Method, path: &str, query: Option<&str>, body: &[u8]) -> [u8; 32] {
    let mut hasher = Sha256::new();
    for field in [
        method.as_str().as_bytes(),
        path.as_bytes(),
        // An absent query and an empty one (`/x?`) are the same request.
        query.unwrap_or_default().as_bytes(),
        body,
    ] {
        hasher.update((field.len() as u64).to_be_bytes());
        hasher.update(field);
    }
    hasher.finalize().into()
}

/// Which requests share keys: a key is unique within its scope.
#[derive(Clone)]
pub struct Scope(Arc<ScopeFn>);

type ScopeFn = dyn Fn(&http::request::Parts) -> Option<String> + Send + Sync;

impl Scope {
    /// A scope computed from the request (e.g. from an authenticated principal in its
    /// extensions). `None` means the request is not covered: it runs without idempotency.
    pub fn from_fn(
        f: impl Fn(&http::request::Parts) -> Option<String> + Send + Sync + 'static,
    ) -> Self {
        Scope(Arc::new(f))
    }

    /// One scope for every request (e.g. `"admin"` for the operator API).
    pub fn fixed(scope: impl Into<String>) -> Self {
        let scope = scope.into();
        Self::from_fn(move |_| Some(scope.clone()))
    }

    /// The authenticated tenant ([`crate::auth::TenantId`], set by an auth layer that runs
    /// before this one). Requests without one are not covered.
    pub fn tenant() -> Self {
        Self::from_fn(|parts| {
            parts
                .extensions
                .get::<crate::auth::TenantId>()
                .map(|t| t.0.clone())
        })
    }
}

impl std::fmt::Debug for Scope {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Scope(..)")
    }
}

/// Encrypts stored response bodies that carry secrets (see [`SealStoredBody`]).
pub trait BodySealer: Send + Sync + 'static {
    /// Encrypts `body`, bound to `scope`.
    fn seal<'a>(
        &'a self,
        scope: &'a str,
        body: &'a [u8],
    ) -> BoxFuture<'a, Result<Vec<u8>, BoxError>>;
    /// Decrypts what [`BodySealer::seal`] produced for `scope`.
    fn open<'a>(
        &'a self,
        scope: &'a str,
        sealed: &'a [u8],
    ) -> BoxFuture<'a, Result<Vec<u8>, BoxError>>;
}

/// Response extension marking a body that carries a secret (a freshly issued API key or
/// signing secret): it is stored for replay only encrypted by the layer's [`BodySealer`], and
/// not stored at all (the key is released) when the layer has none.
#[derive(Clone, Copy, Debug, Default)]
pub struct SealStoredBody;

struct Settings {
    db: Client,
    table: String,
    scope: Scope,
    ttl_secs: i64,
    required: bool,
    lock_timeout: Duration,
    max_body: usize,
    sealer: Option<Arc<dyn BodySealer>>,
}

/// The idempotency layer. See the [module documentation](self).
#[derive(Clone)]
pub struct IdempotencyLayer {
    settings: Arc<Settings>,
}

impl IdempotencyLayer {
    /// Records go to `table` (a table with string keys `pk`/`sk` and TTL on `ttl`); keys are
    /// unique per `scope`. Defaults: records live 7 days, keys are optional.
    pub fn new(db: Client, table: impl Into<String>, scope: Scope) -> Self {
        IdempotencyLayer {
            settings: Arc::new(Settings {
                db,
                table: table.into(),
                scope,
                ttl_secs: clock::days(7),
                required: false,
                lock_timeout: DEFAULT_LOCK_TIMEOUT,
                max_body: DEFAULT_MAX_BODY,
                sealer: None,
            }),
        }
    }

    fn with(mut self, f: impl FnOnce(&mut Settings)) -> Self {
        let settings = Arc::get_mut(&mut self.settings).expect("configured before it is shared");
        f(settings);
        self
    }

    /// How long completed records are kept (`IDEMPOTENCY_TTL_DAYS`).
    pub fn ttl(self, ttl: Duration) -> Self {
        self.with(|s| s.ttl_secs = ttl.as_secs().max(1) as i64)
    }

    /// When true, a covered write without a key answers `400` (`IDEMPOTENCY_REQUIRED`).
    pub fn required(self, required: bool) -> Self {
        self.with(|s| s.required = required)
    }

    /// How long a running request holds its key when the request carries no Lambda deadline.
    pub fn lock_timeout(self, timeout: Duration) -> Self {
        self.with(|s| s.lock_timeout = timeout)
    }

    /// Encrypts the stored bodies of responses marked [`SealStoredBody`].
    pub fn sealer(self, sealer: impl BodySealer) -> Self {
        self.with(|s| s.sealer = Some(Arc::new(sealer)))
    }

    /// Largest request body accepted on a keyed request (`413` beyond).
    pub fn max_body_bytes(self, max: usize) -> Self {
        self.with(|s| s.max_body = max)
    }
}

impl std::fmt::Debug for IdempotencyLayer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("IdempotencyLayer")
            .field("table", &self.settings.table)
            .field("ttl_secs", &self.settings.ttl_secs)
            .field("required", &self.settings.required)
            .finish_non_exhaustive()
    }
}

impl<S> Layer<S> for IdempotencyLayer {
    type Service = IdempotencyService<S>;
    fn layer(&self, inner: S) -> Self::Service {
        IdempotencyService {
            inner,
            settings: self.settings.clone(),
        }
    }
}

/// The service [`IdempotencyLayer`] wraps around another.
#[derive(Clone)]
pub struct IdempotencyService<S> {
    inner: S,
    settings: Arc<Settings>,
}

/// A boxed error of a body or a sealer.
pub type BoxError = Box<dyn std::error::Error + Send + Sync>;

impl<S, ReqBody, ResBody> Service<Request<ReqBody>> for IdempotencyService<S>
where
    S: Service<Request<ReqBody>, Response = Response<ResBody>> + Clone + Send + 'static,
    S::Future: Send + 'static,
    S::Error: Send + 'static,
    ReqBody: http_body::Body<Data = Bytes> + From<Vec<u8>> + Send + 'static,
    ReqBody::Error: Into<BoxError>,
    ResBody: http_body::Body<Data = Bytes> + Send + 'static,
    ResBody::Error: Into<BoxError>,
{
    type Response = Response<Body>;
    type Error = S::Error;
    type Future = BoxFuture<'static, Result<Response<Body>, S::Error>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: Request<ReqBody>) -> Self::Future {
        // The service that was polled ready is the one that gets the request.
        let clone = self.inner.clone();
        let inner = std::mem::replace(&mut self.inner, clone);
        Box::pin(handle(self.settings.clone(), inner, req))
    }
}

fn covered(method: &Method) -> bool {
    matches!(
        *method,
        Method::POST | Method::PUT | Method::PATCH | Method::DELETE
    )
}

/// What becomes of a keyed request's record once its handler has answered.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Outcome {
    /// The answer is final: store it and replay it to every retry with this key.
    Save,
    /// The answer is not final (a failure, or "come back later"): delete the record, so that a
    /// retry with the same key runs again.
    Release,
}

/// Whether an answer is stored for replay or its key released (see the module documentation).
///
/// A 4xx is the client's final answer (as Stripe does), unless it asks the client to retry:
/// `408`, `425`, `429`, or any 4xx carrying `Retry-After` (`409` "changed concurrently", a lost
/// lock). Stored, such an answer would be replayed for the record's whole life and the retry it
/// asks for could never succeed. On a 2xx or 3xx, `Retry-After` does not ask for the same request
/// again (it times a redirect or a poll), so it is kept with the answer.
pub fn outcome(status: StatusCode, headers: &HeaderMap) -> Outcome {
    let retry_later = matches!(
        status,
        StatusCode::REQUEST_TIMEOUT | StatusCode::TOO_EARLY | StatusCode::TOO_MANY_REQUESTS
    ) || (status.is_client_error() && headers.contains_key(header::RETRY_AFTER));
    if status.is_server_error() || status.is_informational() || retry_later {
        Outcome::Release
    } else {
        Outcome::Save
    }
}

async fn handle<S, ReqBody, ResBody>(
    settings: Arc<Settings>,
    mut inner: S,
    req: Request<ReqBody>,
) -> Result<Response<Body>, S::Error>
where
    S: Service<Request<ReqBody>, Response = Response<ResBody>>,
    ReqBody: http_body::Body<Data = Bytes> + From<Vec<u8>> + Send + 'static,
    ReqBody::Error: Into<BoxError>,
    ResBody: http_body::Body<Data = Bytes> + Send + 'static,
    ResBody::Error: Into<BoxError>,
{
    if !covered(req.method()) {
        return Ok(inner.call(req).await?.map(Body::new));
    }
    let key = match key_from_headers(req.headers()) {
        Ok(key) => key,
        Err(problem) => return Ok(problem.into_response()),
    };
    let (parts, body) = req.into_parts();
    let scope = (settings.scope.0)(&parts);
    let (key, scope) = match (key, scope) {
        (Some(key), Some(scope)) => (key, scope),
        (None, Some(_)) if settings.required => {
            return Ok(
                ApiError::bad_request("an Idempotency-Key header is required").into_response(),
            );
        }
        _ => {
            let req = Request::from_parts(parts, body);
            return Ok(inner.call(req).await?.map(Body::new));
        }
    };

    let body = match Limited::new(body, settings.max_body).collect().await {
        Ok(collected) => collected.to_bytes(),
        Err(err) => {
            let problem = if err.is::<http_body_util::LengthLimitError>() {
                ApiError::payload_too_large(format!(
                    "request body is over {} bytes",
                    settings.max_body
                ))
            } else {
                ApiError::bad_request("request body could not be read")
            };
            return Ok(problem.into_response());
        }
    };
    let fp = fingerprint(&parts.method, parts.uri.path(), parts.uri.query(), &body);
    let lock_expires_at_ms = lock_deadline_ms(&parts, settings.lock_timeout);

    let lock = match acquire(&settings, scope, &key, &fp, lock_expires_at_ms).await {
        Ok(Acquired::Locked(lock)) => lock,
        Ok(Acquired::Replay(stored)) => {
            crate::telemetry::emit(
                &crate::telemetry::IDEMPOTENCY,
                1.0,
                &[("Outcome", "replayed")],
            );
            return Ok(stored.into_response(true));
        }
        Ok(Acquired::Refused(problem)) => {
            let outcome = if problem.status() == http::StatusCode::CONFLICT {
                "conflict"
            } else {
                "mismatch"
            };
            crate::telemetry::emit(&crate::telemetry::IDEMPOTENCY, 1.0, &[("Outcome", outcome)]);
            return Ok(problem.into_response());
        }
        Err(err) => return Ok(err.into_response()),
    };

    let mut req = Request::from_parts(parts, ReqBody::from(body.to_vec()));
    req.extensions_mut().insert(lock.clone());
    let answered = AssertUnwindSafe(inner.call(req)).catch_unwind().await;
    let res = match answered {
        Err(_panic) => {
            lock.release().await;
            return Ok(ApiError::internal(anyhow::anyhow!("handler panicked")).into_response());
        }
        Ok(Err(err)) => {
            lock.release().await;
            return Err(err);
        }
        Ok(Ok(res)) => res,
    };
    if lock.is_saved() {
        return Ok(res.map(Body::new));
    }
    if outcome(res.status(), res.headers()) == Outcome::Release {
        lock.release().await;
        return Ok(res.map(Body::new));
    }
    let (res_parts, res_body) = res.into_parts();
    let collected = res_body
        .collect()
        .await
        .map(|c| c.to_bytes())
        .map_err(|err| err.into().to_string());
    let bytes = match collected {
        Ok(bytes) => bytes,
        Err(detail) => {
            lock.release().await;
            return Ok(ApiError::internal(anyhow::anyhow!(
                "response body could not be read: {detail}"
            ))
            .into_response());
        }
    };
    let mut stored =
        StoredResponse::from_parts(res_parts.status, &res_parts.headers, bytes.clone());
    stored.sensitive = res_parts.extensions.get::<SealStoredBody>().is_some();
    if stored.body.len() > MAX_STORED_BODY {
        // Too large to keep: the key is released rather than replaying something else.
        tracing::warn!(
            len = stored.body.len(),
            "response too large to store for idempotent replay; key released"
        );
        lock.release().await;
    } else if stored.sensitive && settings.sealer.is_none() {
        tracing::warn!("response carries a secret and no sealer is configured; key released");
        lock.release().await;
    } else {
        lock.save(&stored).await;
    }
    Ok(Response::from_parts(res_parts, Body::from(bytes)))
}

/// The lock lasts until the function's deadline: after that the request is dead anyway.
fn lock_deadline_ms(parts: &http::request::Parts, fallback: Duration) -> i64 {
    use lambda_http::RequestExt;
    let now = clock::now_epoch_millis();
    parts
        .lambda_context_ref()
        .map(|ctx| ctx.deadline as i64)
        .filter(|deadline| *deadline > now)
        .unwrap_or(now + fallback.as_millis() as i64)
}

enum Acquired {
    Locked(IdempotencyLock),
    Replay(StoredResponse),
    Refused(ApiError),
}

async fn acquire(
    settings: &Arc<Settings>,
    scope: String,
    key: &str,
    fp: &[u8; 32],
    lock_expires_at_ms: i64,
) -> Result<Acquired, ApiError> {
    let pk = record_pk(&scope, key);
    let token = ids::new_id("lock");
    let now = clock::now_epoch();
    let ttl = now + settings.ttl_secs;
    let item = Item::from([
        (table::PK.to_owned(), s(&pk)),
        (table::SK.to_owned(), s(RECORD_SK)),
        (attr::STATUS.to_owned(), s(attr::IN_PROGRESS)),
        (attr::FINGERPRINT.to_owned(), s(hex::encode(fp))),
        (attr::LOCK_TOKEN.to_owned(), s(&token)),
        (attr::LOCK_EXPIRES_AT_MS.to_owned(), n(lock_expires_at_ms)),
        (attr::CREATED_AT.to_owned(), n(now)),
        (table::TTL.to_owned(), n(ttl)),
    ]);
    let result = settings
        .db
        .put_item()
        .table_name(&settings.table)
        .set_item(Some(item))
        .condition_expression(
            "attribute_not_exists(pk) OR #ttl <= :now OR \
             (#status = :in_progress AND lock_expires_at < :now_ms)",
        )
        .expression_attribute_names("#ttl", table::TTL)
        .expression_attribute_names("#status", attr::STATUS)
        .expression_attribute_values(":now", n(now))
        .expression_attribute_values(":now_ms", n(clock::now_epoch_millis()))
        .expression_attribute_values(":in_progress", s(attr::IN_PROGRESS))
        .return_values_on_condition_check_failure(ReturnValuesOnConditionCheckFailure::AllOld)
        .send()
        .await;
    let old = match result {
        Ok(_) => {
            return Ok(Acquired::Locked(IdempotencyLock {
                state: Arc::new(LockState {
                    settings: settings.clone(),
                    scope,
                    pk,
                    token,
                    fingerprint: *fp,
                    saved: AtomicBool::new(false),
                    commits: AtomicU32::new(0),
                }),
            }));
        }
        Err(SdkError::ServiceError(ctx)) => match ctx.into_err() {
            PutItemError::ConditionalCheckFailedException(e) => e.item.unwrap_or_default(),
            other => return Err(ApiError::internal(other)),
        },
        Err(err) => return Err(err.into()),
    };
    if old.get_s(attr::FINGERPRINT) != Some(hex::encode(fp).as_str()) {
        return Ok(Acquired::Refused(ApiError::unprocessable(
            "idempotency-key-reused",
            "Idempotency key reused",
            "this Idempotency-Key was used with a different request (method, path, query or body)",
        )));
    }
    if old.get_s(attr::STATUS) == Some(attr::COMPLETED)
        && let Some(mut stored) = StoredResponse::from_item(&old)
    {
        if old.get_bool(attr::RESPONSE_SEALED) == Some(true) {
            let sealer = settings.sealer.as_ref().ok_or_else(|| {
                ApiError::internal(anyhow::anyhow!("sealed idempotent response, no sealer"))
            })?;
            let body = sealer.open(&scope, &stored.body).await.map_err(|e| {
                ApiError::internal(anyhow::anyhow!("idempotent response does not open: {e}"))
            })?;
            stored.body = Bytes::from(body);
            stored.sensitive = true;
        }
        return Ok(Acquired::Replay(stored));
    }
    Ok(Acquired::Refused(
        ApiError::conflict("a request with this Idempotency-Key is still in progress")
            .with_retry_after(1),
    ))
}

/// The answer stored with a completed record and replayed for its retries.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StoredResponse {
    pub status: StatusCode,
    pub content_type: Option<String>,
    pub location: Option<String>,
    /// `Retry-After`, kept with an answer that is saved (a 2xx or 3xx: see [`outcome`]).
    pub retry_after: Option<String>,
    pub body: Bytes,
    /// The body carries a secret: stored only sealed (see [`SealStoredBody`]).
    pub sensitive: bool,
}

impl StoredResponse {
    /// A JSON answer (`application/json`), serialized once so that the bytes stored are the
    /// bytes sent.
    pub fn json(status: StatusCode, value: &impl serde::Serialize) -> Self {
        StoredResponse {
            status,
            content_type: Some("application/json".to_owned()),
            location: None,
            retry_after: None,
            body: Bytes::from(serde_json::to_vec(value).unwrap_or_default()),
            sensitive: false,
        }
    }

    /// An answer without a body (e.g. `204`).
    pub fn empty(status: StatusCode) -> Self {
        StoredResponse {
            status,
            content_type: None,
            location: None,
            retry_after: None,
            body: Bytes::new(),
            sensitive: false,
        }
    }

    /// Marks the body as carrying a secret (see [`SealStoredBody`]).
    pub fn sensitive(mut self) -> Self {
        self.sensitive = true;
        self
    }

    /// Adds a `Location` header.
    pub fn with_location(mut self, location: impl Into<String>) -> Self {
        self.location = Some(location.into());
        self
    }

    fn from_parts(status: StatusCode, headers: &HeaderMap, body: Bytes) -> Self {
        let header = |name: HeaderName| {
            headers
                .get(name)
                .and_then(|v| v.to_str().ok())
                .map(String::from)
        };
        StoredResponse {
            status,
            content_type: header(header::CONTENT_TYPE),
            location: header(header::LOCATION),
            retry_after: header(header::RETRY_AFTER),
            body,
            sensitive: false,
        }
    }

    fn from_item(item: &Item) -> Option<Self> {
        let status =
            StatusCode::from_u16(u16::try_from(item.get_i64(attr::RESPONSE_STATUS)?).ok()?).ok()?;
        Some(StoredResponse {
            status,
            content_type: item.get_s(attr::RESPONSE_CONTENT_TYPE).map(String::from),
            location: item.get_s(attr::RESPONSE_LOCATION).map(String::from),
            retry_after: item.get_s(attr::RESPONSE_RETRY_AFTER).map(String::from),
            body: item
                .get_bin(attr::RESPONSE_BODY)
                .map(Bytes::copy_from_slice)
                .unwrap_or_default(),
            sensitive: false,
        })
    }

    /// Whether this answer is stored or its key released ([`outcome`]).
    pub fn outcome(&self) -> Outcome {
        let mut headers = HeaderMap::new();
        if let Some(value) = self
            .retry_after
            .as_deref()
            .and_then(|v| HeaderValue::from_str(v).ok())
        {
            headers.insert(header::RETRY_AFTER, value);
        }
        outcome(self.status, &headers)
    }

    /// The HTTP response; `replayed` adds `Idempotent-Replayed: true`.
    pub fn into_response(self, replayed: bool) -> Response<Body> {
        let mut res = Response::new(Body::from(self.body));
        *res.status_mut() = self.status;
        let headers = res.headers_mut();
        for (name, value) in [
            (header::CONTENT_TYPE, self.content_type),
            (header::LOCATION, self.location),
            (header::RETRY_AFTER, self.retry_after),
        ] {
            if let Some(value) = value.and_then(|v| HeaderValue::from_str(&v).ok()) {
                headers.insert(name, value);
            }
        }
        if replayed {
            headers.insert(IDEMPOTENT_REPLAYED, HeaderValue::from_static("true"));
        }
        if self.sensitive {
            res.extensions_mut().insert(SealStoredBody);
        }
        res
    }

    /// The update completing a record with this answer (its body as stored: `body`, sealed or
    /// not), if `token` still holds its lock.
    fn completion(
        &self,
        table_name: &str,
        pk: &str,
        token: &str,
        body: &[u8],
        sealed: bool,
    ) -> Update {
        let mut u = UpdateBuilder::default();
        u.set(attr::STATUS, s(attr::COMPLETED))
            .set(attr::RESPONSE_STATUS, n(self.status.as_u16()))
            .remove(attr::LOCK_EXPIRES_AT_MS)
            .set_or_remove(
                attr::RESPONSE_CONTENT_TYPE,
                self.content_type.clone().map(s),
            )
            .set_or_remove(attr::RESPONSE_LOCATION, self.location.clone().map(s))
            .set_or_remove(attr::RESPONSE_RETRY_AFTER, self.retry_after.clone().map(s))
            .set_or_remove(
                attr::RESPONSE_BODY,
                (!body.is_empty()).then(|| bin(body.to_vec())),
            )
            .set_or_remove(attr::RESPONSE_SEALED, sealed.then(|| table::b(true)));
        // `in_progress` too: a resent commit that DynamoDB already applied must not apply
        // again (see `commit_with_response`).
        let (lock_token, status) = (u.expr.name(attr::LOCK_TOKEN), u.expr.name(attr::STATUS));
        let (token, in_progress) = (u.expr.value(s(token)), u.expr.value(s(attr::IN_PROGRESS)));
        u.condition(format!(
            "{lock_token} = {token} AND {status} = {in_progress}"
        ))
        .return_old_on_condition_failure()
        .build(table_name, table::key(pk, RECORD_SK))
    }
}

struct LockState {
    settings: Arc<Settings>,
    scope: String,
    pk: String,
    token: String,
    /// The request's fingerprint (see [`fingerprint`]).
    fingerprint: [u8; 32],
    saved: AtomicBool,
    /// Commits attempted under this lock, numbering their `ClientRequestToken`s.
    commits: AtomicU32,
}

/// The record a keyed request holds while its handler runs; in the request's extensions.
///
/// A handler whose effect is a DynamoDB write passes it to [`commit_with_response`] so that the
/// effect and the stored answer commit in one transaction.
#[derive(Clone)]
pub struct IdempotencyLock {
    state: Arc<LockState>,
}

impl std::fmt::Debug for IdempotencyLock {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("IdempotencyLock")
            .field("pk", &self.state.pk)
            .finish_non_exhaustive()
    }
}

impl IdempotencyLock {
    /// The `TransactWriteItem` completing this record with `response` (sealing a sensitive
    /// body first); it fails the transaction if the lock was lost (expired and taken over).
    pub async fn completion_item(
        &self,
        response: &StoredResponse,
    ) -> Result<TransactWriteItem, ApiError> {
        Ok(TransactWriteItem::builder()
            .update(self.completion(response).await?)
            .build())
    }

    async fn completion(&self, response: &StoredResponse) -> Result<Update, ApiError> {
        let state = &self.state;
        let (body, sealed) = if response.sensitive {
            let sealer = state.settings.sealer.as_ref().ok_or_else(|| {
                ApiError::internal(anyhow::anyhow!(
                    "a response carrying a secret needs a sealer to be stored"
                ))
            })?;
            let sealed = sealer
                .seal(&state.scope, &response.body)
                .await
                .map_err(|e| ApiError::internal(anyhow::anyhow!("sealing failed: {e}")))?;
            (sealed, true)
        } else {
            (response.body.to_vec(), false)
        };
        Ok(response.completion(
            &state.settings.table,
            &state.pk,
            &state.token,
            &body,
            sealed,
        ))
    }

    /// A key for a third party's idempotency (e.g. Stripe's `Idempotency-Key`) that is the same
    /// for every attempt of this request — the same scope, key and fingerprint, even after this
    /// lock was lost and taken over — and differs for anything else: hex SHA-256 of `purpose`,
    /// the record's key and the fingerprint. Unlike the lock token, it survives a lost lock, so a
    /// retry can never make the third party act twice.
    pub fn derived_key(&self, purpose: &str) -> String {
        use sha2::{Digest, Sha256};
        let mut h = Sha256::new();
        for part in [purpose.as_bytes(), self.state.pk.as_bytes()] {
            h.update((part.len() as u64).to_be_bytes());
            h.update(part);
        }
        h.update(self.state.fingerprint);
        hex::encode(h.finalize())
    }

    /// Tells the layer that the handler committed [`Self::completion_item`], so it does not
    /// save the response again.
    pub fn mark_saved(&self) {
        self.state.saved.store(true, Ordering::Release);
    }

    fn is_saved(&self) -> bool {
        self.state.saved.load(Ordering::Acquire)
    }

    /// The `ClientRequestToken` of this request's next commit: a function of the lock token and
    /// the commit's number, so a resend of one commit is the same request to DynamoDB, while a
    /// handler's next attempt (other items, e.g. a debit retried after a conflict) is a new one
    /// (reusing a token with other items is an `IdempotentParameterMismatch`).
    fn next_commit_token(&self) -> String {
        let n = self.state.commits.fetch_add(1, Ordering::Relaxed);
        commit_token(&self.state.token, n)
    }

    /// True when `record` (the `ALL_OLD` copy returned by a failed completion) shows this
    /// request's own completion: an earlier send of the same commit applied.
    fn completed_by_us(&self, record: &Item) -> bool {
        record.get_s(attr::LOCK_TOKEN) == Some(self.state.token.as_str())
            && record.get_s(attr::STATUS) == Some(attr::COMPLETED)
    }

    /// Stores the answer. A failure leaves the record `in_progress` until the lock expires: the
    /// caller already has its answer, so it is logged, not surfaced.
    async fn save(&self, response: &StoredResponse) {
        let update = match self.completion(response).await {
            Ok(update) => update,
            Err(err) => {
                // Without a stored answer a retry must be able to run again.
                tracing::error!(error = %err, "idempotent response could not be prepared");
                self.release().await;
                return;
            }
        };
        let result = self
            .state
            .settings
            .db
            .update_item()
            .table_name(update.table_name())
            .set_key(Some(update.key().clone()))
            .update_expression(update.update_expression())
            .set_condition_expression(update.condition_expression().map(String::from))
            .set_expression_attribute_names(update.expression_attribute_names().cloned())
            .set_expression_attribute_values(update.expression_attribute_values().cloned())
            .send()
            .await;
        match result {
            Ok(_) => {}
            Err(SdkError::ServiceError(ctx))
                if matches!(
                    ctx.err(),
                    UpdateItemError::ConditionalCheckFailedException(_)
                ) =>
            {
                tracing::warn!("idempotency lock lost before the response was saved; not stored");
            }
            Err(err) => tracing::error!(
                error = %aws_sdk_dynamodb::error::DisplayErrorContext(err),
                "idempotency record could not be saved"
            ),
        }
    }

    /// Deletes the record if this request still holds it and it is still `in_progress`, so the
    /// client may retry. A record this request completed stays: its commit may have applied even
    /// though the handler saw an error (a lost response), and the retry must get that answer.
    async fn release(&self) {
        let result = self
            .state
            .settings
            .db
            .delete_item()
            .table_name(&self.state.settings.table)
            .set_key(Some(table::key(&self.state.pk, RECORD_SK)))
            .condition_expression("lock_token = :token AND #status = :in_progress")
            .expression_attribute_names("#status", attr::STATUS)
            .expression_attribute_values(":token", s(&self.state.token))
            .expression_attribute_values(":in_progress", s(attr::IN_PROGRESS))
            .send()
            .await;
        if let Err(err) = result
            && !err
                .as_service_error()
                .is_some_and(|e| e.is_conditional_check_failed_exception())
        {
            tracing::error!(
                error = %aws_sdk_dynamodb::error::DisplayErrorContext(err),
                "idempotency record could not be released"
            );
        }
    }
}

/// Why [`commit_with_response`] wrote nothing.
#[derive(Debug)]
pub enum CommitError {
    /// A condition of the caller's items failed: one reason per item of `items`, in order
    /// (code `ConditionalCheckFailed`, `TransactionConflict`, `None` for items that passed; with
    /// the item when its write asked for `ReturnValuesOnConditionCheckFailure`).
    Cancelled(Vec<CancellationReason>),
    /// The idempotency lock was lost to a newer request with the same key.
    LockLost,
    /// AWS (or the sealer) failed: answer 5xx, the key is released.
    Failed(ApiError),
}

impl From<CommitError> for ApiError {
    /// A fallback mapping; handlers match [`CommitError::Cancelled`] themselves.
    fn from(err: CommitError) -> Self {
        match err {
            CommitError::Cancelled(_) => {
                ApiError::conflict("the resource changed concurrently; retry").with_retry_after(1)
            }
            CommitError::LockLost => lock_lost(),
            CommitError::Failed(err) => err,
        }
    }
}

/// Commits a handler's effect and, when the request holds `lock`, the completion of its record
/// storing `response`, in ONE `TransactWriteItems` (the completion is appended last, so the
/// indexes of `items` in cancellation reasons are unchanged). Returns `response` as the HTTP
/// answer on success.
///
/// With a lock, the transaction carries a `ClientRequestToken` derived from it, and an ambiguous
/// failure ([`ambiguous`]: the write may have applied) is resent once as the same request; a
/// resend that finds the record completed by this request is a success (see the module
/// documentation). DynamoDB requests: one, two after an ambiguous failure.
pub async fn commit_with_response(
    db: &Client,
    items: Vec<TransactWriteItem>,
    lock: Option<&IdempotencyLock>,
    response: StoredResponse,
) -> Result<Response<Body>, CommitError> {
    let count = items.len();
    let mut request = db.transact_write_items().set_transact_items(Some(items));
    // An answer that is not stored (see `outcome`) commits its effect alone; the layer then
    // releases the key.
    let lock = lock.filter(|_| response.outcome() == Outcome::Save);
    if let Some(lock) = lock {
        request = request
            .transact_items(
                lock.completion_item(&response)
                    .await
                    .map_err(CommitError::Failed)?,
            )
            .client_request_token(lock.next_commit_token());
    }
    let mut result = request.clone().send().await;
    if lock.is_some()
        && let Err(err) = &result
        && ambiguous(err)
    {
        tracing::warn!(
            error = %aws_sdk_dynamodb::error::DisplayErrorContext(err),
            "commit outcome unknown; resending it with the same ClientRequestToken"
        );
        result = request.send().await;
    }
    let err = match result {
        Ok(_) => {
            if let Some(lock) = lock {
                lock.mark_saved();
            }
            return Ok(response.into_response(false));
        }
        Err(err) => err,
    };
    let Some(mut reasons) = table::cancellation_reasons(&err).map(<[_]>::to_vec) else {
        return Err(CommitError::Failed(err.into()));
    };
    if let Some(lock) = lock
        && let table::ItemOutcome::ConditionFailed(record) = table::item_outcome(&reasons, count)
    {
        if record.is_some_and(|record| lock.completed_by_us(record)) {
            // An earlier send of this very commit applied (its response was lost); every item
            // of a transaction applies together, so the effect is written, once.
            lock.mark_saved();
            return Ok(response.into_response(false));
        }
        return Err(CommitError::LockLost);
    }
    reasons.truncate(count);
    Err(CommitError::Cancelled(reasons))
}

/// True when a failed `TransactWriteItems` may nevertheless have been applied: no answer came
/// (timeout, transport or response error), or DynamoDB answered that it failed internally or
/// that the same token is still running. Resending it with the same `ClientRequestToken` is safe.
pub fn ambiguous<R>(err: &SdkError<TransactWriteItemsError, R>) -> bool {
    match err {
        SdkError::ConstructionFailure(_) => false,
        SdkError::ServiceError(ctx) => matches!(
            ctx.err(),
            TransactWriteItemsError::InternalServerError(_)
                | TransactWriteItemsError::TransactionInProgressException(_)
        ),
        _ => true,
    }
}

/// The `ClientRequestToken` of commit number `n` under lock token `lock_token` (36 characters,
/// DynamoDB's limit).
fn commit_token(lock_token: &str, n: u32) -> String {
    ids::derived_id("ctk", &[lock_token, &n.to_string()])
}

/// The answer for a write whose idempotency completion failed: the key now belongs to a newer
/// request.
pub fn lock_lost() -> ApiError {
    ApiError::conflict(
        "a newer request with this Idempotency-Key holds it; retry to get its answer",
    )
    .with_retry_after(1)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(pairs: &[(&str, &[u8])]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.append(
                HeaderName::from_bytes(k.as_bytes()).unwrap(),
                HeaderValue::from_bytes(v).unwrap(),
            );
        }
        h
    }

    #[test]
    fn keys_are_visible_ascii_of_bounded_length() {
        assert_eq!(key_from_headers(&headers(&[])).unwrap(), None);
        assert_eq!(
            key_from_headers(&headers(&[("idempotency-key", b"abc-123")])).unwrap(),
            Some("abc-123".into())
        );
        assert_eq!(
            key_from_headers(&headers(&[("x-idempotency-key", b"k")])).unwrap(),
            Some("k".into())
        );
        let long = "a".repeat(255);
        assert!(key_from_headers(&headers(&[("idempotency-key", long.as_bytes())])).is_ok());
        let too_long = "a".repeat(256);
        for bad in [
            too_long.as_bytes(),
            b"".as_slice(),
            b"has space",
            b"tab\there",
            "é".as_bytes(),
        ] {
            let err = key_from_headers(&headers(&[("idempotency-key", bad)])).unwrap_err();
            assert_eq!(err.status(), 400);
        }
        // The same key in both headers is fine; two different keys are not.
        assert!(
            key_from_headers(&headers(&[
                ("idempotency-key", b"a"),
                ("x-idempotency-key", b"a")
            ]))
            .is_ok()
        );
        assert!(
            key_from_headers(&headers(&[
                ("idempotency-key", b"a"),
                ("x-idempotency-key", b"b")
            ]))
            .is_err()
        );
    }

    #[test]
    fn fingerprints_separate_fields() {
        let base = fingerprint(&Method::POST, "/v1/usage", None, b"{}");
        assert_eq!(
            base,
            fingerprint(&Method::POST, "/v1/usage", Some(""), b"{}")
        );
        assert_ne!(base, fingerprint(&Method::PUT, "/v1/usage", None, b"{}"));
        assert_ne!(
            base,
            fingerprint(&Method::POST, "/v1/usage", Some("a=1"), b"{}")
        );
        assert_ne!(base, fingerprint(&Method::POST, "/v1/usage", None, b"{ }"));
        // Moving bytes between fields changes the fingerprint.
        assert_ne!(
            fingerprint(&Method::POST, "/a", Some("b"), b""),
            fingerprint(&Method::POST, "/a", None, b"b")
        );
    }

    /// What an update's `SET name = :value` clauses assign, by attribute name.
    fn assigned(update: &Update) -> Item {
        let (names, values) = (
            update.expression_attribute_names().unwrap(),
            update.expression_attribute_values().unwrap(),
        );
        let set = update.update_expression().strip_prefix("SET ").unwrap();
        let set = set.split(" REMOVE ").next().unwrap();
        set.split(", ")
            .map(|clause| {
                let (name, value) = clause.split_once(" = ").unwrap();
                (names[name].clone(), values[value].clone())
            })
            .collect()
    }

    #[test]
    fn stored_responses_round_trip_through_the_record() {
        let stored = StoredResponse::json(StatusCode::CREATED, &serde_json::json!({"id": "x"}))
            .with_location("/v1/things/x");
        let update = stored.completion("t", "IDEM#s#k", "lock_1", &stored.body, false);
        let mut item = assigned(&update);
        assert_eq!(item.get_s(attr::STATUS), Some(attr::COMPLETED));
        assert_eq!(StoredResponse::from_item(&item), Some(stored.clone()));
        let (names, values) = (
            update.expression_attribute_names().unwrap(),
            update.expression_attribute_values().unwrap(),
        );
        let condition = update.condition_expression().unwrap();
        let (token, status) = condition.split_once(" AND ").unwrap();
        let (name, value) = token.split_once(" = ").unwrap();
        assert_eq!(
            (names[name].as_str(), &values[value]),
            (attr::LOCK_TOKEN, &s("lock_1"))
        );
        let (name, value) = status.split_once(" = ").unwrap();
        assert_eq!(
            (names[name].as_str(), &values[value]),
            (attr::STATUS, &s(attr::IN_PROGRESS))
        );

        // An empty body is not stored and reads back empty.
        let empty = StoredResponse {
            status: StatusCode::NO_CONTENT,
            content_type: None,
            location: None,
            retry_after: None,
            body: Bytes::new(),
            sensitive: false,
        };
        let update = empty.completion("t", "IDEM#s#k", "lock_1", b"", false);
        assert!(update.update_expression().ends_with(
            "REMOVE #lock_expires_at, #response_content_type, #response_location, \
             #response_retry_after, #response_body, #response_sealed"
        ));
        item.remove(attr::RESPONSE_BODY);
        item.remove(attr::RESPONSE_CONTENT_TYPE);
        item.remove(attr::RESPONSE_LOCATION);
        item.insert(attr::RESPONSE_STATUS.to_owned(), n(204));
        assert_eq!(StoredResponse::from_item(&item), Some(empty));

        let res = stored.into_response(true);
        assert_eq!(res.headers()[IDEMPOTENT_REPLAYED], "true");
        assert_eq!(res.headers()[header::LOCATION], "/v1/things/x");
    }

    #[test]
    fn retry_after_is_stored_with_a_kept_answer_and_replayed() {
        let headers = headers(&[("retry-after", b"120"), ("content-type", b"text/plain")]);
        let stored = StoredResponse::from_parts(StatusCode::ACCEPTED, &headers, Bytes::new());
        assert_eq!(stored.retry_after.as_deref(), Some("120"));
        assert_eq!(stored.outcome(), Outcome::Save);
        let update = stored.completion("t", "IDEM#s#k", "lock_1", b"", false);
        let item = assigned(&update);
        assert_eq!(item.get_i64(attr::RESPONSE_STATUS), Some(202));
        let read = StoredResponse::from_item(&item).unwrap();
        assert_eq!(read.retry_after.as_deref(), Some("120"));
        assert_eq!(
            read.into_response(true).headers()[header::RETRY_AFTER],
            "120"
        );
    }

    #[test]
    fn answers_that_ask_for_a_retry_release_the_key_and_final_answers_are_saved() {
        let none = HeaderMap::new();
        let retry_after = headers(&[("retry-after", b"1")]);
        let cases = [
            (200, &none, Outcome::Save),
            (201, &none, Outcome::Save),
            (204, &none, Outcome::Save),
            // On a success or a redirect, Retry-After times a poll or a redirect: kept.
            (202, &retry_after, Outcome::Save),
            (303, &retry_after, Outcome::Save),
            (400, &none, Outcome::Save),
            (402, &none, Outcome::Save),
            (404, &none, Outcome::Save),
            // A 409 that is final (e.g. "already exists") is an answer…
            (409, &none, Outcome::Save),
            (422, &none, Outcome::Save),
            // … one that asks to come back ("changed concurrently", a lost lock) is not.
            (409, &retry_after, Outcome::Release),
            (400, &retry_after, Outcome::Release),
            (408, &none, Outcome::Release),
            (425, &none, Outcome::Release),
            (429, &none, Outcome::Release),
            (429, &retry_after, Outcome::Release),
            (500, &none, Outcome::Release),
            (502, &none, Outcome::Release),
            (503, &retry_after, Outcome::Release),
            (101, &none, Outcome::Release),
        ];
        for (status, headers, expected) in cases {
            let status = StatusCode::from_u16(status).unwrap();
            assert_eq!(outcome(status, headers), expected, "{status} {headers:?}");
        }
        // The conflict a cancelled commit answers is released.
        let res = ApiError::from(CommitError::Cancelled(Vec::new())).into_response();
        assert_eq!(outcome(res.status(), res.headers()), Outcome::Release);
        let res = lock_lost().into_response();
        assert_eq!(outcome(res.status(), res.headers()), Outcome::Release);
    }

    #[test]
    fn commit_tokens_are_a_function_of_the_lock_and_the_commit_number() {
        let token = commit_token("lock_abc", 0);
        assert!(
            token.len() <= 36,
            "DynamoDB's ClientRequestToken limit: {token}"
        );
        assert_eq!(token, commit_token("lock_abc", 0));
        assert_ne!(token, commit_token("lock_abc", 1));
        assert_ne!(token, commit_token("lock_abd", 0));
    }

    #[test]
    fn only_failures_that_may_have_applied_are_resent() {
        use aws_sdk_dynamodb::types::error::{
            InternalServerError, TransactionCanceledException, TransactionInProgressException,
        };
        type Err = SdkError<TransactWriteItemsError, ()>;
        let service = |e: TransactWriteItemsError| -> Err { SdkError::service_error(e, ()) };
        assert!(ambiguous(&Err::timeout_error("attempt timed out")));
        assert!(ambiguous(&Err::dispatch_failure(
            aws_smithy_runtime_api::client::result::ConnectorError::io("reset".into())
        )));
        assert!(ambiguous(&Err::response_error("truncated", ())));
        assert!(ambiguous(&service(
            TransactWriteItemsError::InternalServerError(
                InternalServerError::builder().message("x").build()
            )
        )));
        assert!(ambiguous(&service(
            TransactWriteItemsError::TransactionInProgressException(
                TransactionInProgressException::builder().build()
            )
        )));
        assert!(!ambiguous(&service(
            TransactWriteItemsError::TransactionCanceledException(
                TransactionCanceledException::builder().build()
            )
        )));
        assert!(!ambiguous(&Err::construction_failure("bad input")));
    }
}

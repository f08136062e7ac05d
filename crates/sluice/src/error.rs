//! The one error type of the HTTP surface, rendered as RFC 9457 `application/problem+json`.
//!
//! Client errors carry a detail naming the cause. Server errors are logged with their cause and
//! answered with a generic detail: no internal text, AWS request id or secret ever reaches a client.
//!
//! Refusals the framework makes before or instead of a handler (unknown route, wrong method, body
//! over axum's limit, an extractor's rejection: plain text or empty bodies) are turned into
//! problems too by [`problem_for_rejection`], a `map_response` layer on each HTTP function's
//! router, so every refusal a client sees is `application/problem+json`.

use axum::response::{IntoResponse, Response};
use http::{HeaderValue, StatusCode, header};
use serde::Serialize;

/// Media type of every error body.
pub const PROBLEM_JSON: &str = "application/problem+json";

/// Result of an HTTP handler.
pub type ApiResult<T> = Result<T, ApiError>;

/// An error answered to an HTTP client.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    /// A 4xx answer; `slug` names the problem type, `detail` the cause.
    #[error("{status} {slug}: {detail}")]
    Client {
        status: StatusCode,
        slug: &'static str,
        title: &'static str,
        detail: String,
        retry_after: Option<u32>,
    },
    /// A failure of ours or of AWS; retryable, logged, never shown.
    #[error("internal error: {0:#}")]
    Internal(#[source] anyhow::Error),
}

impl ApiError {
    fn client(
        status: StatusCode,
        slug: &'static str,
        title: &'static str,
        detail: impl Into<String>,
    ) -> Self {
        ApiError::Client {
            status,
            slug,
            title,
            detail: detail.into(),
            retry_after: None,
        }
    }
    /// `400`: the request is malformed; `detail` says how.
    pub fn bad_request(detail: impl Into<String>) -> Self {
        Self::client(
            StatusCode::BAD_REQUEST,
            "bad-request",
            "Bad request",
            detail,
        )
    }
    /// `400` with a specific problem type (e.g. `invalid-signature`).
    pub fn bad_request_as(
        slug: &'static str,
        title: &'static str,
        detail: impl Into<String>,
    ) -> Self {
        Self::client(StatusCode::BAD_REQUEST, slug, title, detail)
    }
    /// `401`: missing or wrong credentials.
    pub fn unauthorized(detail: impl Into<String>) -> Self {
        Self::client(
            StatusCode::UNAUTHORIZED,
            "unauthorized",
            "Unauthorized",
            detail,
        )
    }
    /// `402`: not enough credits.
    pub fn payment_required(detail: impl Into<String>) -> Self {
        Self::client(
            StatusCode::PAYMENT_REQUIRED,
            "insufficient-credits",
            "Insufficient credits",
            detail,
        )
    }
    /// `404`: missing, or belonging to another tenant (the two are indistinguishable).
    pub fn not_found(what: &str) -> Self {
        Self::client(
            StatusCode::NOT_FOUND,
            "not-found",
            "Not found",
            format!("{what} not found"),
        )
    }
    /// `405`.
    pub fn method_not_allowed() -> Self {
        Self::client(
            StatusCode::METHOD_NOT_ALLOWED,
            "method-not-allowed",
            "Method not allowed",
            "method not allowed on this path",
        )
    }
    /// `409`: conflicts with the current state.
    pub fn conflict(detail: impl Into<String>) -> Self {
        Self::client(StatusCode::CONFLICT, "conflict", "Conflict", detail)
    }
    /// `413`: body over the limit.
    pub fn payload_too_large(detail: impl Into<String>) -> Self {
        Self::client(
            StatusCode::PAYLOAD_TOO_LARGE,
            "payload-too-large",
            "Payload too large",
            detail,
        )
    }
    /// `422`: well-formed but unacceptable.
    pub fn unprocessable(
        slug: &'static str,
        title: &'static str,
        detail: impl Into<String>,
    ) -> Self {
        Self::client(StatusCode::UNPROCESSABLE_ENTITY, slug, title, detail)
    }
    /// `422` for a body field that fails validation.
    pub fn invalid_field(detail: impl Into<String>) -> Self {
        Self::unprocessable("validation-error", "Validation error", detail)
    }
    /// A server-side failure: logged here, answered as a generic retryable `500`.
    pub fn internal(err: impl Into<anyhow::Error>) -> Self {
        ApiError::Internal(err.into())
    }
    /// Adds `Retry-After` (seconds) to the answer.
    pub fn with_retry_after(mut self, secs: u32) -> Self {
        if let ApiError::Client { retry_after, .. } = &mut self {
            *retry_after = Some(secs);
        }
        self
    }
    /// The HTTP status this error answers with.
    pub fn status(&self) -> StatusCode {
        match self {
            ApiError::Client { status, .. } => *status,
            ApiError::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }
}

/// The `type` URI of a problem: a reference to its entry on the deployment's own `GET /docs` page
/// (rendered from `docs/openapi.json`, where every slug is listed), so it resolves wherever Sluice
/// runs, offline included, and names no domain the project does not own.
pub fn problem_type_uri(slug: &str) -> String {
    format!("/docs#problem-{slug}")
}

/// The RFC 9457 body.
#[derive(Debug, Serialize, serde::Deserialize, PartialEq, utoipa::ToSchema)]
pub struct Problem {
    #[serde(rename = "type")]
    pub kind: String,
    pub title: String,
    pub status: u16,
    pub detail: String,
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let (status, slug, title, detail, retry_after) = match self {
            ApiError::Client {
                status,
                slug,
                title,
                detail,
                retry_after,
            } => (status, slug, title, detail, retry_after),
            ApiError::Internal(err) => {
                // The cause goes to the log (without payloads or secrets: errors never carry them),
                // the client gets a generic, retryable answer.
                tracing::error!(error = %format!("{err:#}"), "request failed");
                (
                    StatusCode::INTERNAL_SERVER_ERROR,
                    "internal",
                    "Internal error",
                    "the request could not be completed; it is safe to retry".to_owned(),
                    Some(1),
                )
            }
        };
        problem_response(status, slug, title, detail, retry_after)
    }
}

fn problem_response(
    status: StatusCode,
    slug: &str,
    title: &str,
    detail: String,
    retry_after: Option<u32>,
) -> Response {
    let problem = Problem {
        kind: problem_type_uri(slug),
        title: title.into(),
        status: status.as_u16(),
        detail,
    };
    let body = serde_json::to_vec(&problem).unwrap_or_default();
    let mut res = (status, body).into_response();
    res.headers_mut()
        .insert(header::CONTENT_TYPE, HeaderValue::from_static(PROBLEM_JSON));
    if let Some(secs) = retry_after {
        res.headers_mut()
            .insert(header::RETRY_AFTER, HeaderValue::from(secs));
    }
    res
}

/// Longest rejection text read from a framework's answer (axum's are one line).
const MAX_REJECTION_TEXT: usize = 1024;

/// True for an answer the framework made, not a handler: an error status with a plain-text body
/// or none (axum's 404, 405, 413 and extractor rejections). Handlers answer `ApiError`
/// (problem+json) or JSON (`/health`'s 503), which pass through untouched.
pub fn is_rejection(status: StatusCode, headers: &http::HeaderMap) -> bool {
    (status.is_client_error() || status.is_server_error())
        && headers
            .get(header::CONTENT_TYPE)
            .is_none_or(|ct| ct.as_bytes().starts_with(b"text/plain"))
}

/// The problem for a framework rejection with `status` and plain-text `text`. A 4xx keeps the
/// framework's text as its detail (it describes the request, e.g. "Failed to buffer the request
/// body: length limit exceeded"); a 5xx is logged and answered like [`ApiError::Internal`],
/// keeping its status.
pub fn rejection_problem(status: StatusCode, text: &str) -> Response {
    let text = text.trim();
    let detail = |default: &str| {
        if text.is_empty() {
            default.to_owned()
        } else {
            text.to_owned()
        }
    };
    if status.is_server_error() {
        tracing::error!(%status, rejection = text, "request rejected by the framework");
        return problem_response(
            status,
            "internal",
            "Internal error",
            "the request could not be completed; it is safe to retry".to_owned(),
            Some(1),
        );
    }
    let (slug, title, default) = match status {
        StatusCode::BAD_REQUEST => ("bad-request", "Bad request", "the request is malformed"),
        StatusCode::NOT_FOUND => ("not-found", "Not found", "route not found"),
        StatusCode::METHOD_NOT_ALLOWED => (
            "method-not-allowed",
            "Method not allowed",
            "method not allowed on this path",
        ),
        StatusCode::PAYLOAD_TOO_LARGE => (
            "payload-too-large",
            "Payload too large",
            "the request body is too large",
        ),
        StatusCode::UNSUPPORTED_MEDIA_TYPE => (
            "unsupported-media-type",
            "Unsupported media type",
            "the request body's content-type is not accepted here",
        ),
        StatusCode::UNPROCESSABLE_ENTITY => (
            "unprocessable-content",
            "Unprocessable content",
            "the request body does not have the expected shape",
        ),
        // Any other 4xx a layer may answer: documented as a bad request, keeping its status.
        _ => (
            "bad-request",
            status.canonical_reason().unwrap_or("Bad request"),
            "the request was refused",
        ),
    };
    problem_response(status, slug, title, detail(default), None)
}

/// A `map_response` layer turning framework rejections ([`is_rejection`]) into problem+json,
/// keeping their other headers (`Allow` on a `405`):
/// `router.layer(axum::middleware::map_response(problem_for_rejection))`.
///
/// One layer at the router rather than custom extractors or per-router fallbacks: it covers
/// every rejection axum or a tower layer makes (unknown route, wrong method, body limit, `Path`,
/// `Query` and `Json` rejections), present and future, and handlers keep axum's own extractors.
pub async fn problem_for_rejection(res: Response) -> Response {
    if !is_rejection(res.status(), res.headers()) {
        return res;
    }
    let (parts, body) = res.into_parts();
    let text = axum::body::to_bytes(body, MAX_REJECTION_TEXT)
        .await
        .map(|b| String::from_utf8_lossy(&b).into_owned())
        .unwrap_or_default();
    let mut problem = rejection_problem(parts.status, &text);
    for (name, value) in &parts.headers {
        if name != header::CONTENT_TYPE
            && name != header::CONTENT_LENGTH
            && !problem.headers().contains_key(name)
        {
            problem.headers_mut().append(name, value.clone());
        }
    }
    problem
}

/// Any AWS SDK failure is ours to retry, never the client's fault.
impl<E, R> From<aws_sdk_dynamodb::error::SdkError<E, R>> for ApiError
where
    E: std::error::Error + Send + Sync + 'static,
    R: std::fmt::Debug + Send + Sync + 'static,
{
    fn from(err: aws_sdk_dynamodb::error::SdkError<E, R>) -> Self {
        // DisplayErrorContext renders the whole cause chain for the log line.
        ApiError::Internal(anyhow::anyhow!(
            "AWS request failed: {}",
            aws_sdk_dynamodb::error::DisplayErrorContext(err)
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http_body_util::BodyExt;

    async fn render(err: ApiError) -> (StatusCode, http::HeaderMap, Problem) {
        let res = err.into_response();
        let status = res.status();
        let headers = res.headers().clone();
        let bytes = res.into_body().collect().await.unwrap().to_bytes();
        (status, headers, serde_json::from_slice(&bytes).unwrap())
    }

    #[tokio::test]
    async fn client_errors_name_their_cause() {
        let (status, headers, p) = render(ApiError::bad_request("field `url` is missing")).await;
        assert_eq!(status, 400);
        assert_eq!(headers[header::CONTENT_TYPE], PROBLEM_JSON);
        assert_eq!(p.status, 400);
        assert!(p.detail.contains("url"));
    }

    fn rejections_app() -> axum::Router {
        use axum::{
            Json,
            extract::{DefaultBodyLimit, Path, Query},
            routing::{get, post},
        };
        #[derive(serde::Deserialize)]
        struct Body {
            #[allow(dead_code)]
            amount: i64,
        }
        #[derive(serde::Deserialize)]
        struct Params {
            #[allow(dead_code)]
            limit: u32,
        }
        axum::Router::new()
            .route("/json", post(|_: Json<Body>| async { "ok" }))
            .route("/bytes", post(|_: bytes::Bytes| async { "ok" }))
            .route("/query", get(|_: Query<Params>| async { "ok" }))
            .route("/items/{n}", get(|_: Path<u32>| async { "ok" }))
            .route(
                "/answers",
                get(|| async { ApiError::conflict("kept as it is") }).post(|| async {
                    (
                        StatusCode::SERVICE_UNAVAILABLE,
                        Json(serde_json::json!({"status": "unhealthy"})),
                    )
                }),
            )
            .layer(DefaultBodyLimit::max(16))
            .layer(axum::middleware::map_response(problem_for_rejection))
    }

    async fn send(req: http::Request<axum::body::Body>) -> (StatusCode, http::HeaderMap, Vec<u8>) {
        use tower::ServiceExt;
        let res = rejections_app().oneshot(req).await.unwrap();
        let status = res.status();
        let headers = res.headers().clone();
        let bytes = res.into_body().collect().await.unwrap().to_bytes();
        (status, headers, bytes.to_vec())
    }

    fn request(
        method: &str,
        uri: &str,
        ct: Option<&str>,
        body: &str,
    ) -> http::Request<axum::body::Body> {
        let mut b = http::Request::builder().method(method).uri(uri);
        if let Some(ct) = ct {
            b = b.header(header::CONTENT_TYPE, ct);
        }
        b.body(axum::body::Body::from(body.to_owned())).unwrap()
    }

    #[tokio::test]
    async fn every_framework_rejection_is_a_problem_naming_its_cause() {
        let json = Some("application/json");
        let cases = [
            (request("GET", "/nowhere", None, ""), 404, "not-found"),
            (
                request("DELETE", "/json", None, ""),
                405,
                "method-not-allowed",
            ),
            (
                request("POST", "/bytes", None, &"x".repeat(17)),
                413,
                "payload-too-large",
            ),
            (
                request("POST", "/json", Some("text/plain"), "{}"),
                415,
                "unsupported-media-type",
            ),
            (
                request("POST", "/json", json, "{not json"),
                400,
                "bad-request",
            ),
            (
                request("POST", "/json", json, "{\"amount\":\"x\"}"),
                422,
                "unprocessable-content",
            ),
            (
                request("GET", "/query?limit=-1", None, ""),
                400,
                "bad-request",
            ),
            (request("GET", "/items/abc", None, ""), 400, "bad-request"),
        ];
        for (req, status, slug) in cases {
            let what = format!("{} {}", req.method(), req.uri());
            let (got, headers, body) = send(req).await;
            assert_eq!(got, status, "{what}");
            assert_eq!(headers[header::CONTENT_TYPE], PROBLEM_JSON, "{what}");
            let p: Problem = serde_json::from_slice(&body).unwrap();
            assert_eq!(p.kind, problem_type_uri(slug), "{what}");
            assert_eq!(p.status, status, "{what}");
            assert!(!p.detail.is_empty(), "{what}");
        }
        // The 405 still says which methods are allowed.
        let (_, headers, _) = send(request("DELETE", "/json", None, "")).await;
        assert_eq!(headers[header::ALLOW], "POST");
        // axum's own text names the cause.
        let (_, _, body) = send(request("POST", "/json", json, "{\"amount\":\"x\"}")).await;
        let p: Problem = serde_json::from_slice(&body).unwrap();
        assert!(p.detail.contains("amount"), "{}", p.detail);
    }

    #[tokio::test]
    async fn answers_of_handlers_pass_through_untouched() {
        let (status, headers, body) = send(request("GET", "/answers", None, "")).await;
        assert_eq!(status, 409);
        assert_eq!(headers[header::CONTENT_TYPE], PROBLEM_JSON);
        assert!(String::from_utf8_lossy(&body).contains("kept as it is"));
        let (status, headers, body) = send(request("POST", "/answers", None, "")).await;
        assert_eq!(status, 503);
        assert_eq!(headers[header::CONTENT_TYPE], "application/json");
        assert_eq!(body, br#"{"status":"unhealthy"}"#);
    }

    #[tokio::test]
    async fn a_5xx_rejection_keeps_its_status_and_never_its_text() {
        let res = rejection_problem(
            StatusCode::SERVICE_UNAVAILABLE,
            "pool exhausted at 10.0.0.7",
        );
        let (parts, body) = res.into_parts();
        assert_eq!(parts.status, 503);
        assert!(parts.headers.contains_key(header::RETRY_AFTER));
        let body = body.collect().await.unwrap().to_bytes();
        let p: Problem = serde_json::from_slice(&body).unwrap();
        assert_eq!(p.status, 503);
        assert!(!p.detail.contains("10.0.0.7"));
    }

    #[tokio::test]
    async fn internal_errors_never_leak() {
        let err = ApiError::internal(anyhow::anyhow!(
            "dispatch failure: request id 1234-abcd, secret whsec_x"
        ));
        let (status, headers, p) = render(err).await;
        assert_eq!(status, 500);
        assert!(headers.contains_key(header::RETRY_AFTER));
        assert!(!p.detail.contains("1234") && !p.detail.contains("whsec"));
    }
}

//! The one error type of the HTTP surface, rendered as RFC 9457 `application/problem+json`.
//!
//! Client errors carry a detail naming the cause. Server errors are logged with their cause and
//! answered with a generic detail: no internal text, AWS request id or secret ever reaches a client.

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

//! `JsonBody<T>` and `OptionalJsonBody<T>`: typed JSON request bodies whose failures are
//! problem+json `400`s naming the cause.
//!
//! Why not axum's `Json`: it refuses a body without `content-type: application/json` (`415`) and
//! answers a wrong field type with `422`; the API has always accepted any content type for its
//! JSON bodies and answered both malformed JSON and a wrong field type with `400` ("invalid JSON
//! body: …", serde's message naming the field and position). These extractors keep that contract;
//! `422` stays reserved for well-formed values a handler refuses (`ApiError::invalid_field`).
//! The body limit is axum's (`DefaultBodyLimit`, a `413` the problem layer turns into
//! problem+json). No AWS request.

use axum::{
    body::Bytes,
    extract::{FromRequest, Request},
    response::{IntoResponse, Response},
};
use serde::de::DeserializeOwned;
use sluice::{ApiError, ApiResult};

/// Parses `body` as `T`; the `400` names the cause (pure).
pub fn parse<T: DeserializeOwned>(body: &[u8]) -> ApiResult<T> {
    serde_json::from_slice(body)
        .map_err(|e| ApiError::bad_request(format!("invalid JSON body: {e}")))
}

/// Parses `body` as `T`, an empty (or blank) body reading as `{}`: for bodies whose fields are
/// all optional (pure).
pub fn parse_optional<T: DeserializeOwned>(body: &[u8]) -> ApiResult<T> {
    if body.iter().all(u8::is_ascii_whitespace) {
        parse(b"{}")
    } else {
        parse(body)
    }
}

/// A required JSON body of type `T`.
#[derive(Debug)]
pub struct JsonBody<T>(pub T);

/// A JSON body of type `T` that may be omitted (an empty body reads as `{}`).
#[derive(Debug)]
pub struct OptionalJsonBody<T>(pub T);

async fn bytes<S: Send + Sync>(req: Request, state: &S) -> Result<Bytes, Response> {
    // The limit's rejection (413, text) becomes problem+json in the router's problem layer.
    Bytes::from_request(req, state)
        .await
        .map_err(IntoResponse::into_response)
}

impl<T: DeserializeOwned, S: Send + Sync> FromRequest<S> for JsonBody<T> {
    type Rejection = Response;

    async fn from_request(req: Request, state: &S) -> Result<Self, Response> {
        let body = bytes(req, state).await?;
        parse(&body)
            .map(JsonBody)
            .map_err(IntoResponse::into_response)
    }
}

impl<T: DeserializeOwned, S: Send + Sync> FromRequest<S> for OptionalJsonBody<T> {
    type Rejection = Response;

    async fn from_request(req: Request, state: &S) -> Result<Self, Response> {
        let body = bytes(req, state).await?;
        parse_optional(&body)
            .map(OptionalJsonBody)
            .map_err(IntoResponse::into_response)
    }
}

#[cfg(test)]
mod tests {
    use serde::Deserialize;

    use super::*;

    #[derive(Debug, Deserialize, PartialEq)]
    #[serde(deny_unknown_fields)]
    struct Body {
        n: i64,
        s: Option<String>,
    }

    fn detail(err: ApiError) -> (u16, String) {
        match err {
            ApiError::Client { status, detail, .. } => (status.as_u16(), detail),
            ApiError::Internal(_) => (500, String::new()),
        }
    }

    #[test]
    fn malformed_json_and_wrong_types_are_400s_naming_the_cause() {
        assert_eq!(
            parse::<Body>(br#"{"n":1}"#).unwrap(),
            Body { n: 1, s: None }
        );
        let (status, d) = detail(parse::<Body>(b"{not json").unwrap_err());
        assert_eq!(status, 400);
        assert!(d.starts_with("invalid JSON body: "), "{d}");
        let (status, d) = detail(parse::<Body>(br#"{"n":"x"}"#).unwrap_err());
        assert_eq!(status, 400);
        assert!(d.contains("invalid type"), "{d}");
        let (_, d) = detail(parse::<Body>(br#"{"n":1,"x":2}"#).unwrap_err());
        assert!(d.contains("unknown field `x`"), "{d}");
        let (_, d) = detail(parse::<Body>(b"{}").unwrap_err());
        assert!(d.contains("missing field `n`"), "{d}");
    }

    #[test]
    fn an_optional_body_may_be_empty() {
        #[derive(Debug, Deserialize, PartialEq)]
        struct Opt {
            s: Option<String>,
        }
        assert_eq!(parse_optional::<Opt>(b" \n").unwrap(), Opt { s: None });
        assert!(parse_optional::<Opt>(b"nope").is_err());
    }
}

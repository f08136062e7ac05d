//! `sluice-local receive`: a webhook endpoint for development.
//!
//! Listens on 127.0.0.1, answers every `POST` with `204`, and prints one line per delivery: its
//! `webhook-id`, the event `type`, and whether the Standard Webhooks signature verifies with the
//! secret(s) given by `--secret` (the endpoint's `whsec_…`; give two during a rotation). The local
//! runner allows loopback endpoint URLs, so
//!
//! ```text
//! make receive PORT=4000 SECRET=whsec_…       # terminal 1
//! curl … POST /v1/endpoints {"url": "http://127.0.0.1:4000/hook"}
//! make trigger EVENT=tests/fixtures/stripe/…  # terminal 2: Stripe event in, tenant webhook out
//! ```
//!
//! [`inspect`] is the check itself; the integration tests' receivers use it too.

use std::net::SocketAddr;

use anyhow::Context;
use axum::{Router, extract::State, http::StatusCode};
use bytes::Bytes;
use http::HeaderMap;
use sluice::webhook_signature::{self, SignatureError, SigningKey};
use tokio::net::TcpListener;

/// Whether a delivery's signature holds.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Verification {
    /// A `v1` signature matches one of the secrets and the timestamp is fresh.
    Verified,
    /// It does not, and why.
    Invalid(SignatureError),
    /// No secret was given, so nothing was checked.
    NotChecked,
}

/// What the receiver makes of one request.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Inspection {
    /// `webhook-id`.
    pub id: Option<String>,
    /// The body's `type`.
    pub event_type: Option<String>,
    /// The signature check.
    pub verification: Verification,
}

impl std::fmt::Display for Inspection {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let verdict = match &self.verification {
            Verification::Verified => "signature verified".to_owned(),
            Verification::Invalid(err) => format!("signature INVALID: {err}"),
            Verification::NotChecked => "signature not checked (no --secret)".to_owned(),
        };
        write!(
            f,
            "{}  {}  {verdict}",
            self.id.as_deref().unwrap_or("<no webhook-id>"),
            self.event_type.as_deref().unwrap_or("<no type>"),
        )
    }
}

/// Checks a received delivery against `keys` as a Standard Webhooks receiver does (timestamp
/// within 5 minutes of `now`, any `v1` signature matching any key).
pub fn inspect(headers: &HeaderMap, body: &[u8], keys: &[SigningKey], now: i64) -> Inspection {
    let header = |name: &str| headers.get(name).and_then(|v| v.to_str().ok());
    let id = header(webhook_signature::HEADER_ID).map(str::to_owned);
    let event_type = serde_json::from_slice::<serde_json::Value>(body)
        .ok()
        .and_then(|v| v.get("type")?.as_str().map(str::to_owned));
    let verification = if keys.is_empty() {
        Verification::NotChecked
    } else {
        match webhook_signature::verify(
            keys,
            id.as_deref().unwrap_or_default(),
            header(webhook_signature::HEADER_TIMESTAMP).unwrap_or_default(),
            header(webhook_signature::HEADER_SIGNATURE).unwrap_or_default(),
            body,
            now,
            webhook_signature::DEFAULT_TOLERANCE_SECS,
        ) {
            Ok(()) => Verification::Verified,
            Err(err) => Verification::Invalid(err),
        }
    };
    Inspection {
        id,
        event_type,
        verification,
    }
}

/// The receiver's options.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Options {
    pub port: u16,
    pub secrets: Vec<String>,
}

impl Options {
    /// Parses `[--port N] [--secret whsec_…]…`.
    pub fn parse(args: &[String]) -> anyhow::Result<Self> {
        let mut options = Options {
            port: 4000,
            secrets: Vec::new(),
        };
        let mut args = args.iter();
        while let Some(arg) = args.next() {
            let mut value = |name: &str| {
                args.next()
                    .cloned()
                    .with_context(|| format!("{name} needs a value"))
            };
            match arg.as_str() {
                "--port" => {
                    let v = value("--port")?;
                    options.port = v
                        .parse()
                        .with_context(|| format!("--port {v:?} is not a port number"))?;
                }
                "--secret" => options.secrets.push(value("--secret")?),
                other => anyhow::bail!("unknown option {other:?}"),
            }
        }
        Ok(options)
    }
}

/// What the receiver's handler shares: the keys to verify with and where lines go.
#[derive(Clone)]
struct ReceiverState {
    keys: Vec<SigningKey>,
    print: fn(&Inspection),
}

/// The receiver's router: every path, `POST` only; prints each delivery through `print`.
pub fn router(keys: Vec<SigningKey>, print: fn(&Inspection)) -> Router {
    Router::new()
        .fallback(
            |State(state): State<ReceiverState>,
             method: http::Method,
             headers: HeaderMap,
             body: Bytes| async move {
                if method != http::Method::POST {
                    return StatusCode::METHOD_NOT_ALLOWED;
                }
                (state.print)(&inspect(
                    &headers,
                    &body,
                    &state.keys,
                    sluice::clock::now_epoch(),
                ));
                StatusCode::NO_CONTENT
            },
        )
        .with_state(ReceiverState { keys, print })
}

/// Runs the receiver until Ctrl-C.
pub async fn run(options: Options) -> anyhow::Result<()> {
    let keys = options
        .secrets
        .iter()
        .map(|s| SigningKey::from_secret(s).context("--secret must be whsec_ followed by base64"))
        .collect::<anyhow::Result<Vec<_>>>()?;
    let addr = SocketAddr::from(([127, 0, 0, 1], options.port));
    let listener = TcpListener::bind(addr)
        .await
        .with_context(|| format!("port {} is in use (use --port)", options.port))?;
    println!("Receiving webhooks on http://{addr}/ (any path). Ctrl-C stops.");
    if keys.is_empty() {
        println!("No --secret given: signatures are not checked.");
    }
    axum::serve(
        listener,
        router(keys, |inspection| println!("{inspection}")),
    )
    .with_graceful_shutdown(async {
        let _ = tokio::signal::ctrl_c().await;
    })
    .await?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn secret() -> &'static str {
        "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
    }

    #[test]
    fn a_signed_delivery_verifies_and_a_tampered_one_does_not() {
        let body = br#"{"type":"credits.added","timestamp":"2026-01-01T00:00:00Z","data":{}}"#;
        let key = SigningKey::from_secret(secret()).unwrap();
        let mut headers = HeaderMap::new();
        headers.insert("webhook-id", "msg_1".parse().unwrap());
        headers.insert("webhook-timestamp", "1000".parse().unwrap());
        let sig = webhook_signature::sign(std::slice::from_ref(&key), "msg_1", 1000, body);
        headers.insert("webhook-signature", sig.parse().unwrap());

        let ok = inspect(&headers, body, std::slice::from_ref(&key), 1000);
        assert_eq!(ok.id.as_deref(), Some("msg_1"));
        assert_eq!(ok.event_type.as_deref(), Some("credits.added"));
        assert_eq!(ok.verification, Verification::Verified);
        assert!(ok.to_string().contains("signature verified"));

        let bad = inspect(&headers, b"{}", std::slice::from_ref(&key), 1000);
        assert_eq!(
            bad.verification,
            Verification::Invalid(SignatureError::NoMatch)
        );
        assert_eq!(
            inspect(&headers, body, &[], 1000).verification,
            Verification::NotChecked
        );
    }

    #[test]
    fn options_parse() {
        let args = |s: &str| s.split_whitespace().map(String::from).collect::<Vec<_>>();
        assert_eq!(
            Options::parse(&args("--port 4001 --secret whsec_a --secret whsec_b")).unwrap(),
            Options {
                port: 4001,
                secrets: vec!["whsec_a".into(), "whsec_b".into()]
            }
        );
        assert_eq!(Options::parse(&[]).unwrap().port, 4000);
        assert!(Options::parse(&args("--port")).is_err());
        assert!(Options::parse(&args("--nope")).is_err());
    }
}

//! The attempt log of a delivery: one entry per HTTP attempt, in the delivery item's `attempts`
//! list (SPEC §6: time, status code or error class, duration, first 4 KiB of the response; the
//! item expires with its event after 30 days).
//!
//! The egress function appends entries ([`Attempt::to_attribute`]); `GET /v1/events/{id}` reads
//! them ([`attempts_of`]) and shows them with [`Attempt::to_json`].

use aws_sdk_dynamodb::types::AttributeValue;
use serde_json::{Value, json};

use crate::{
    clock,
    table::{Item, ItemExt, n, s},
};

/// Delivery item attribute holding the list.
pub const ATTEMPTS: &str = "attempts";

/// One HTTP attempt of a delivery.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Attempt {
    /// When the request was sent (epoch seconds).
    pub at: i64,
    /// The delivery generation it belonged to (replays start a new one).
    pub generation: u32,
    /// 1-based attempt number within its generation.
    pub attempt: u32,
    /// The HTTP status, when an answer arrived.
    pub status_code: Option<u16>,
    /// Why no answer arrived: `timeout`, `connect`, `dns`, `dns_blocked`, `address_blocked`,
    /// `url_rejected`, `request`.
    pub error: Option<String>,
    /// From sending to the end of the (excerpted) answer.
    pub duration_ms: u64,
    /// The first 4 KiB of the response body.
    pub response: String,
}

impl Attempt {
    /// The list entry (a map attribute).
    pub fn to_attribute(&self) -> AttributeValue {
        let mut m = Item::from([
            ("at".to_owned(), n(self.at)),
            ("generation".to_owned(), n(self.generation)),
            ("attempt".to_owned(), n(self.attempt)),
            ("duration_ms".to_owned(), n(self.duration_ms)),
            ("response".to_owned(), s(self.response.as_str())),
        ]);
        if let Some(code) = self.status_code {
            m.insert("status_code".to_owned(), n(code));
        }
        if let Some(error) = &self.error {
            m.insert("error".to_owned(), s(error.as_str()));
        }
        AttributeValue::M(m)
    }

    /// Reads a list entry; `None` if it is not an attempt map.
    pub fn from_attribute(value: &AttributeValue) -> Option<Self> {
        let m = value.as_m().ok()?;
        Some(Attempt {
            at: m.get_i64("at")?,
            generation: m.get_i64("generation").unwrap_or(1).try_into().ok()?,
            attempt: m.get_i64("attempt").unwrap_or(1).try_into().ok()?,
            status_code: m.get_i64("status_code").and_then(|c| c.try_into().ok()),
            error: m.get_s("error").map(str::to_owned),
            duration_ms: m
                .get_i64("duration_ms")
                .unwrap_or(0)
                .try_into()
                .unwrap_or(0),
            response: m.get_s("response").unwrap_or_default().to_owned(),
        })
    }

    /// The API's view: `{at (RFC 3339), generation, attempt, status_code, error, duration_ms,
    /// response}` (`status_code` or `error` is null).
    pub fn to_json(&self) -> Value {
        json!({
            "at": clock::rfc3339(self.at),
            "generation": self.generation,
            "attempt": self.attempt,
            "status_code": self.status_code,
            "error": self.error,
            "duration_ms": self.duration_ms,
            "response": self.response,
        })
    }
}

/// The attempts of a delivery item, oldest first.
pub fn attempts_of(delivery_item: &Item) -> Vec<Attempt> {
    match delivery_item.get(ATTEMPTS) {
        Some(AttributeValue::L(list)) => list.iter().filter_map(Attempt::from_attribute).collect(),
        _ => Vec::new(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn attempts_round_trip_through_the_item() {
        let a = Attempt {
            at: 0,
            generation: 2,
            attempt: 3,
            status_code: Some(500),
            error: None,
            duration_ms: 12,
            response: "oops".into(),
        };
        let b = Attempt {
            status_code: None,
            error: Some("timeout".into()),
            response: String::new(),
            ..a.clone()
        };
        let item = Item::from([(
            ATTEMPTS.to_owned(),
            AttributeValue::L(vec![a.to_attribute(), b.to_attribute()]),
        )]);
        assert_eq!(attempts_of(&item), vec![a.clone(), b.clone()]);
        assert_eq!(a.to_json()["at"], "1970-01-01T00:00:00Z");
        assert_eq!(a.to_json()["status_code"], 500);
        assert_eq!(b.to_json()["status_code"], Value::Null);
        assert_eq!(b.to_json()["error"], "timeout");
        assert!(attempts_of(&Item::new()).is_empty());
    }
}

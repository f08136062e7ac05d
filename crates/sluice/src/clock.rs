//! Time in the forms the table stores: epoch seconds (TTL, ordering) and RFC 3339 (display).

use time::{OffsetDateTime, format_description::well_known::Rfc3339};

/// Seconds since the Unix epoch, now.
pub fn now_epoch() -> i64 {
    OffsetDateTime::now_utc().unix_timestamp()
}

/// Milliseconds since the Unix epoch, now (sort keys that must order within a second).
pub fn now_epoch_millis() -> i64 {
    (OffsetDateTime::now_utc().unix_timestamp_nanos() / 1_000_000) as i64
}

/// RFC 3339 rendering of epoch seconds, e.g. `2026-11-23T10:00:00Z`.
pub fn rfc3339(epoch_secs: i64) -> String {
    OffsetDateTime::from_unix_timestamp(epoch_secs)
        .ok()
        .and_then(|t| t.format(&Rfc3339).ok())
        .unwrap_or_default()
}

/// The current month as `YYYY-MM` (budget periods).
pub fn month_of(epoch_secs: i64) -> String {
    let t = OffsetDateTime::from_unix_timestamp(epoch_secs).unwrap_or(OffsetDateTime::UNIX_EPOCH);
    format!("{:04}-{:02}", t.year(), u8::from(t.month()))
}

/// The hour bucket `YYYY-MM-DDTHH` (statistics counters).
pub fn hour_of(epoch_secs: i64) -> String {
    let t = OffsetDateTime::from_unix_timestamp(epoch_secs).unwrap_or(OffsetDateTime::UNIX_EPOCH);
    format!(
        "{:04}-{:02}-{:02}T{:02}",
        t.year(),
        u8::from(t.month()),
        t.day(),
        t.hour()
    )
}

/// Days → seconds.
pub const fn days(n: u32) -> i64 {
    n as i64 * 86_400
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formats() {
        assert_eq!(rfc3339(0), "1970-01-01T00:00:00Z");
        assert_eq!(month_of(1_764_000_000), "2025-11");
        assert_eq!(hour_of(3600 * 5), "1970-01-01T05");
    }
}

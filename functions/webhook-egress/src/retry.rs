//! When a failed delivery is tried again.
//!
//! The schedule (SPEC §6) is 5 s, 5 min, 30 min, 2 h, 5 h, 10 h, 10 h, 10 h after the 1st … 8th
//! failed attempt, each ±20 % jitter so that endpoints that fail together do not all come back in
//! the same second. The delay becomes the SQS message's visibility timeout, so it is capped at
//! SQS's 12 h maximum. The attempt after the 8th retry is the last: the queue's redrive policy
//! (`maxReceiveCount: 9` in `template.yaml`) moves the message to the dead-letter queue.
//!
//! The delays as listed add up to ≈ 37.6 h from the first to the last attempt (≈ 45 h with the
//! maximum jitter), not the "≈ 3 days" the SPEC mentions beside them; the listed delays are the
//! contract followed here.
//!
//! A `Retry-After` header (on 429 and 503) can only *lengthen* the wait: the delay is the longer
//! of what the endpoint asked for and the schedule's own (jittered) step for that attempt, capped
//! at [`RETRY_AFTER_MAX`]. RFC 9110 §10.2.3 defines `Retry-After` as how long the client ought to
//! wait, not an invitation to come back sooner; receivers of Svix- or Stripe-style webhooks expect
//! the published schedule as the floor (a `Retry-After: 1` must not burn all nine attempts within
//! a minute, turning a short outage into a dead-lettered delivery).

use std::{sync::Mutex, time::Duration};

use rand::{Rng, SeedableRng, rngs::StdRng};

/// Delay before retry n (index n-1) after the n-th failed attempt.
pub const SCHEDULE: [Duration; 8] = [
    Duration::from_secs(5),
    Duration::from_secs(5 * 60),
    Duration::from_secs(30 * 60),
    Duration::from_secs(2 * 3600),
    Duration::from_secs(5 * 3600),
    Duration::from_secs(10 * 3600),
    Duration::from_secs(10 * 3600),
    Duration::from_secs(10 * 3600),
];

/// Attempts in total: the first plus one per scheduled retry. Equals the queue's
/// `maxReceiveCount` (a test checks the template agrees).
pub const MAX_ATTEMPTS: u32 = SCHEDULE.len() as u32 + 1;

/// Fraction of the delay added or removed at random.
pub const JITTER: f64 = 0.2;

/// Longest delay a visibility change can express: SQS caps a message's visibility at 12 h from
/// its receipt, and some of that has passed by the time the attempt is over.
pub const SQS_MAX_VISIBILITY: Duration = Duration::from_secs(12 * 3600 - 60);

/// Longest honoured `Retry-After`: what a visibility timeout can express.
pub const RETRY_AFTER_MAX: Duration = SQS_MAX_VISIBILITY;

/// What to do after a failed attempt.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Next {
    /// Try again after this delay.
    RetryAfter(Duration),
    /// That was the last attempt: the delivery is `failed` and the message goes to the DLQ.
    GiveUp,
}

/// The retry schedule with its jitter source. The source is injectable so tests can predict
/// the delays; production seeds it from the OS.
#[derive(Debug)]
pub struct RetryPolicy {
    rng: Mutex<StdRng>,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        RetryPolicy {
            rng: Mutex::new(StdRng::from_os_rng()),
        }
    }
}

impl RetryPolicy {
    /// A policy whose jitter is the deterministic sequence of `seed`.
    pub fn seeded(seed: u64) -> Self {
        RetryPolicy {
            rng: Mutex::new(StdRng::seed_from_u64(seed)),
        }
    }

    /// What follows the failure of attempt `attempt` (1-based, as SQS's
    /// `ApproximateReceiveCount`), given the endpoint's `Retry-After`, if any.
    pub fn after_failure(&self, attempt: u32, retry_after: Option<Duration>) -> Next {
        if attempt >= MAX_ATTEMPTS {
            return Next::GiveUp;
        }
        let base = SCHEDULE[(attempt.max(1) - 1) as usize];
        // The lock guards a few arithmetic operations; poisoning cannot leave the RNG invalid.
        let factor = {
            let mut rng = self.rng.lock().unwrap_or_else(|p| p.into_inner());
            1.0 + rng.random_range(-JITTER..=JITTER)
        };
        let scheduled = base.mul_f64(factor).min(SQS_MAX_VISIBILITY);
        Next::RetryAfter(retry_delay(scheduled, retry_after))
    }
}

/// The delay before the next attempt: the endpoint's `Retry-After` (if any) may push the
/// `scheduled` delay later, never sooner, and never past what a visibility timeout can hold.
pub fn retry_delay(scheduled: Duration, retry_after: Option<Duration>) -> Duration {
    match retry_after {
        Some(asked) => asked.max(scheduled).min(RETRY_AFTER_MAX),
        None => scheduled,
    }
}

/// Parses a `Retry-After` value: delay seconds or an HTTP date (RFC 9110 §10.2.3), relative to
/// `now`. A date in the past means "now"; anything unparsable is ignored.
pub fn parse_retry_after(value: &str, now: std::time::SystemTime) -> Option<Duration> {
    let value = value.trim();
    if let Ok(secs) = value.parse::<u64>() {
        return Some(Duration::from_secs(secs));
    }
    let at = httpdate::parse_http_date(value).ok()?;
    Some(at.duration_since(now).unwrap_or(Duration::ZERO))
}

#[cfg(test)]
mod tests {
    use std::time::{SystemTime, UNIX_EPOCH};

    use super::*;

    fn delays(policy: &RetryPolicy) -> Vec<Duration> {
        (1..MAX_ATTEMPTS)
            .map(|attempt| match policy.after_failure(attempt, None) {
                Next::RetryAfter(d) => d,
                Next::GiveUp => panic!("attempt {attempt} is not the last"),
            })
            .collect()
    }

    #[test]
    fn the_schedule_is_the_specified_one_within_twenty_percent() {
        let policy = RetryPolicy::seeded(7);
        for _ in 0..50 {
            for (got, base) in delays(&policy).into_iter().zip(SCHEDULE) {
                let (lo, hi) = (base.mul_f64(0.8), base.mul_f64(1.2));
                assert!(got >= lo && got <= hi, "{got:?} outside {lo:?}..={hi:?}");
                assert!(got <= SQS_MAX_VISIBILITY);
            }
        }
        assert_eq!(
            SCHEDULE.iter().map(Duration::as_secs).collect::<Vec<_>>(),
            vec![5, 300, 1800, 7200, 18000, 36000, 36000, 36000]
        );
        // The listed delays add up to ≈ 37.6 h (see the module docs on the SPEC's "≈ 3 days").
        let total: u64 = SCHEDULE.iter().map(Duration::as_secs).sum();
        assert_eq!(total, 135_305);
    }

    #[test]
    fn a_seed_determines_the_jitter_and_the_jitter_varies() {
        let a = delays(&RetryPolicy::seeded(42));
        assert_eq!(a, delays(&RetryPolicy::seeded(42)));
        assert_ne!(a, delays(&RetryPolicy::seeded(43)));
        // Not the bare schedule: jitter was applied.
        assert_ne!(a, SCHEDULE.to_vec());
    }

    #[test]
    fn the_ninth_attempt_is_the_last() {
        let policy = RetryPolicy::seeded(1);
        assert_eq!(MAX_ATTEMPTS, 9);
        assert!(matches!(policy.after_failure(8, None), Next::RetryAfter(_)));
        assert_eq!(policy.after_failure(9, None), Next::GiveUp);
        assert_eq!(
            policy.after_failure(9, Some(Duration::from_secs(3))),
            Next::GiveUp
        );
        assert_eq!(policy.after_failure(12, None), Next::GiveUp);
    }

    #[test]
    fn retry_after_lengthens_the_wait_but_never_shortens_the_schedule() {
        let step = Duration::from_secs(300);
        let delay = |secs| retry_delay(step, Some(Duration::from_secs(secs)));
        // GIVEN the schedule's step of 5 min: a shorter Retry-After is raised to it …
        assert_eq!(delay(0), step);
        assert_eq!(delay(1), step);
        // … a longer one is honoured, up to what a visibility timeout can hold.
        assert_eq!(delay(3600), Duration::from_secs(3600));
        assert_eq!(delay(7 * 86400), RETRY_AFTER_MAX);
        assert_eq!(retry_delay(step, None), step);
    }

    #[test]
    fn a_retry_after_of_one_second_cannot_burn_the_attempts() {
        // WHEN every attempt answers `Retry-After: 1`
        let policy = RetryPolicy::seeded(1);
        let waits: Vec<Duration> = (1..MAX_ATTEMPTS)
            .map(
                |attempt| match policy.after_failure(attempt, Some(Duration::from_secs(1))) {
                    Next::RetryAfter(d) => d,
                    Next::GiveUp => panic!("attempt {attempt} is not the last"),
                },
            )
            .collect();
        // THEN each wait is at least the schedule's step (less its jitter)
        for (got, base) in waits.iter().zip(SCHEDULE) {
            assert!(
                *got >= base.mul_f64(1.0 - JITTER),
                "{got:?} < {base:?} − 20 %"
            );
        }
        let total: Duration = waits.iter().sum();
        assert!(total >= Duration::from_secs(100_000), "{total:?}");
    }

    #[test]
    fn retry_after_parses_seconds_and_http_dates() {
        let now = UNIX_EPOCH + Duration::from_secs(1_445_412_480); // Wed, 21 Oct 2015 07:28:00 GMT
        assert_eq!(
            parse_retry_after("120", now),
            Some(Duration::from_secs(120))
        );
        assert_eq!(
            parse_retry_after("Wed, 21 Oct 2015 07:29:00 GMT", now),
            Some(Duration::from_secs(60))
        );
        assert_eq!(
            parse_retry_after("Wed, 21 Oct 2015 07:00:00 GMT", now),
            Some(Duration::ZERO)
        );
        assert_eq!(parse_retry_after("soon", SystemTime::now()), None);
        assert_eq!(parse_retry_after("-5", SystemTime::now()), None);
    }
}

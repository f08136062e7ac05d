//! When each AWS request of an operation was on the wire: an SDK interceptor recording every
//! request's service, operation, start and end, and [`sequential_round_trips`], the length of the
//! operation's critical path in round trips — what wall time costs in AWS, where each round trip
//! takes milliseconds.
//!
//! A request starts when the SDK hands it to the HTTP client (`read_before_transmit`: built,
//! signed) and ends when the answer's head arrives (`read_after_transmit`). Retries are requests
//! of their own.

use std::{
    sync::{
        Arc, Mutex,
        atomic::{AtomicBool, Ordering},
    },
    time::Instant,
};

use aws_config::SdkConfig;
use aws_smithy_runtime_api::{
    box_error::BoxError,
    client::{
        interceptors::{
            Intercept,
            context::{
                BeforeDeserializationInterceptorContextRef, BeforeTransmitInterceptorContextRef,
            },
        },
        orchestrator::Metadata,
        runtime_components::RuntimeComponents,
    },
};
use aws_smithy_types::config_bag::{ConfigBag, Storable, StoreReplace};
use sluice::aws::AwsClients;

/// One request on the wire.
#[derive(Clone, Debug)]
pub struct Request {
    pub service: String,
    pub operation: String,
    pub start: Instant,
    /// `None` when no answer came (a transport error).
    pub end: Option<Instant>,
    /// The request's body, kept only while [`Timeline::keep_bodies`] is on (the cost model reads
    /// which items each write touched from it; copying it costs CPU, so timed runs leave it off).
    pub body: Option<Vec<u8>>,
}

/// Records every request sent by the clients it built, in order of sending.
#[derive(Clone, Debug, Default)]
pub struct Timeline {
    requests: Arc<Mutex<Vec<Request>>>,
    keep_bodies: Arc<AtomicBool>,
}

/// Which entry of the timeline the current attempt is (kept in the attempt's config bag).
#[derive(Clone, Copy, Debug)]
struct Entry(usize);

impl Storable for Entry {
    type Storer = StoreReplace<Self>;
}

impl Timeline {
    /// DynamoDB, SQS and KMS clients that report to this timeline.
    pub fn clients(&self, sdk: &SdkConfig) -> AwsClients {
        AwsClients::new(sdk).with_interceptor(self.clone())
    }

    /// Whether requests keep a copy of their body from now on.
    pub fn keep_bodies(&self, on: bool) {
        self.keep_bodies.store(on, Ordering::Relaxed);
    }

    /// Every request since the last call (or since the timeline was made); forgets them.
    pub fn take(&self) -> Vec<Request> {
        std::mem::take(&mut *self.requests.lock().unwrap())
    }
}

impl Intercept for Timeline {
    fn name(&self) -> &'static str {
        "Timeline"
    }

    fn read_before_transmit(
        &self,
        context: &BeforeTransmitInterceptorContextRef<'_>,
        _runtime_components: &RuntimeComponents,
        cfg: &mut ConfigBag,
    ) -> Result<(), BoxError> {
        let body = self
            .keep_bodies
            .load(Ordering::Relaxed)
            .then(|| context.request().body().bytes().map(<[u8]>::to_vec))
            .flatten();
        let (service, operation) = cfg.load::<Metadata>().map_or_else(
            || ("?".to_owned(), "?".to_owned()),
            |m| (m.service().to_owned(), m.name().to_owned()),
        );
        let mut requests = self.requests.lock().unwrap();
        requests.push(Request {
            service,
            operation,
            start: Instant::now(),
            end: None,
            body,
        });
        cfg.interceptor_state().store_put(Entry(requests.len() - 1));
        Ok(())
    }

    fn read_after_transmit(
        &self,
        _context: &BeforeDeserializationInterceptorContextRef<'_>,
        _runtime_components: &RuntimeComponents,
        cfg: &mut ConfigBag,
    ) -> Result<(), BoxError> {
        let now = Instant::now();
        if let Some(Entry(i)) = cfg.load::<Entry>().copied() {
            // A `take` between start and end drops the entry: the request is not ours to time.
            if let Some(request) = self.requests.lock().unwrap().get_mut(i)
                && request.end.is_none()
            {
                request.end = Some(now);
            }
        }
        Ok(())
    }
}

/// The longest chain of requests each of which started after the previous one ended: the round
/// trips an operation waits for one after the other, however many it sends in parallel beside
/// them. A request without an end counts as ending when it started.
pub fn sequential_round_trips(requests: &[Request]) -> usize {
    critical_path(requests, |_| 1.0).round() as usize
}

/// The heaviest such chain when each request weighs `weight(request)` — with a service's modelled
/// latency as the weight, the time an operation waits for AWS on its critical path.
pub fn critical_path(requests: &[Request], weight: impl Fn(&Request) -> f64) -> f64 {
    let mut spans: Vec<(Instant, Instant, f64)> = requests
        .iter()
        .map(|r| (r.start, r.end.unwrap_or(r.start), weight(r)))
        .collect();
    spans.sort_by_key(|&(_, end, _)| end);
    // chain[i]: the heaviest chain ending with spans[i] (spans sorted by end, so every possible
    // predecessor comes before it).
    let mut chain = vec![0.0f64; spans.len()];
    for i in 0..spans.len() {
        let before = (0..i)
            .filter(|&j| spans[j].1 <= spans[i].0)
            .map(|j| chain[j])
            .fold(0.0, f64::max);
        chain[i] = before + spans[i].2;
    }
    chain.into_iter().fold(0.0, f64::max)
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    /// Requests given as (start, end) in milliseconds after one instant.
    fn spans(ms: &[(u64, u64)]) -> Vec<Request> {
        let t0 = Instant::now();
        let at = |m: u64| t0 + Duration::from_millis(m);
        ms.iter()
            .map(|&(s, e)| Request {
                service: "DynamoDB".into(),
                operation: "GetItem".into(),
                start: at(s),
                end: Some(at(e)),
                body: None,
            })
            .collect()
    }

    #[test]
    fn no_request_is_no_round_trip() {
        assert_eq!(sequential_round_trips(&[]), 0);
    }

    #[test]
    fn one_after_the_other_counts_each() {
        assert_eq!(
            sequential_round_trips(&spans(&[(0, 4), (5, 9), (9, 13)])),
            3
        );
    }

    #[test]
    fn parallel_requests_count_once() {
        // A batch sent together, then one write after all of them.
        let reqs = spans(&[(0, 4), (1, 5), (1, 6), (7, 11)]);
        assert_eq!(sequential_round_trips(&reqs), 2);
    }

    #[test]
    fn the_longest_chain_wins_over_the_first_found() {
        // A long request beside two short sequential ones: the critical path is the two.
        let reqs = spans(&[(0, 10), (1, 3), (4, 6)]);
        assert_eq!(sequential_round_trips(&reqs), 2);
        // Order of recording does not matter.
        let reqs = spans(&[(4, 6), (0, 10), (1, 3), (11, 12)]);
        assert_eq!(sequential_round_trips(&reqs), 3);
    }

    #[test]
    fn the_critical_path_weighs_each_request() {
        // An SQS send (8) beside two sequential DynamoDB calls (4 + 4), then one more (4).
        let mut reqs = spans(&[(0, 8), (0, 3), (4, 7), (9, 12)]);
        reqs[0].service = "SQS".into();
        let latency = |r: &Request| if r.service == "SQS" { 8.0 } else { 4.0 };
        assert_eq!(critical_path(&reqs, latency), 12.0);
        assert_eq!(sequential_round_trips(&reqs), 3);
    }

    #[test]
    fn a_request_without_an_answer_still_counts() {
        let mut reqs = spans(&[(0, 4), (5, 9)]);
        reqs[1].end = None;
        assert_eq!(sequential_round_trips(&reqs), 2);
    }
}

//! Logging and metrics.
//!
//! Logs are `tracing` events, JSON in Lambda (where `AWS_LAMBDA_FUNCTION_NAME` is set) and
//! human-readable locally. Metrics are CloudWatch Embedded Metric Format lines on stdout, which
//! Lambda's log pipeline turns into metrics without an API call (no AWS request). Each metric is
//! defined once here ([`METRICS`]); `template.yaml`'s alarms and dashboard name them, and a test
//! in `sluice-local` (`monitoring`) fails when they name a metric or dimension set not defined here.

use serde_json::json;
use tracing_subscriber::EnvFilter;

/// Installs the global subscriber once; later calls are no-ops (tests call it freely).
pub fn init() {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    let in_lambda = std::env::var_os("AWS_LAMBDA_FUNCTION_NAME").is_some();
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_target(false);
    let _ = if in_lambda {
        // Lambda adds its own timestamp and request id; a JSON line per event is what Logs Insights parses.
        builder
            .json()
            .flatten_event(true)
            .with_current_span(true)
            .without_time()
            .try_init()
    } else {
        builder.with_writer(std::io::stderr).try_init()
    };
}

/// The CloudWatch namespace of every Sluice metric.
pub const NAMESPACE: &str = "Sluice";

/// One metric the code emits: its name, unit and the dimension sets CloudWatch keeps it under.
/// An alarm or dashboard must name exactly one of these sets (CloudWatch does not aggregate
/// across dimensions), which is why a metric with a detail dimension also has a coarse set.
#[derive(Debug, PartialEq, Eq)]
pub struct Metric {
    pub name: &'static str,
    pub unit: &'static str,
    pub dimension_sets: &'static [&'static [&'static str]],
}

/// Every Stripe event answered, by `Status` (`stripe::store::status`, plus `duplicate`), and by
/// `EventType` and `Status`.
pub const STRIPE_EVENTS: Metric = Metric {
    name: "StripeEvents",
    unit: "Count",
    dimension_sets: &[&["Status"], &["EventType", "Status"]],
};
/// Every delivery message handled, by `Outcome` (`failed`: retries exhausted, or the endpoint
/// disabled on its last failure).
pub const DELIVERIES: Metric = Metric {
    name: "Deliveries",
    unit: "Count",
    dimension_sets: &[&["Outcome"]],
};
/// How long each delivery's HTTP exchange took.
pub const DELIVERY_LATENCY: Metric = Metric {
    name: "DeliveryLatency",
    unit: "Milliseconds",
    dimension_sets: &[&[]],
};
/// Idempotent requests answered without running the handler, by `Outcome`: `replayed`,
/// `conflict` (409: the first still runs), `mismatch` (422: another request under the key).
pub const IDEMPOTENCY: Metric = Metric {
    name: "IdempotentRequests",
    unit: "Count",
    dimension_sets: &[&["Outcome"]],
};
/// Stripe events one reconciliation sweep stored whose webhook had not arrived (one value per
/// run, 0 included, so a run shows as a sample): above 0, webhooks are being missed.
pub const RECONCILE_RECOVERED: Metric = Metric {
    name: "ReconcileRecovered",
    unit: "Count",
    dimension_sets: &[&[]],
};
/// Every metric above: what the template's alarms and dashboard may name.
pub const METRICS: &[&Metric] = &[
    &STRIPE_EVENTS,
    &DELIVERIES,
    &DELIVERY_LATENCY,
    &IDEMPOTENCY,
    &RECONCILE_RECOVERED,
];

/// One EMF document (a JSON line) for `value` of `metric` with `dimensions`, which must name
/// every dimension of the metric's sets.
pub fn emf_line(metric: &Metric, value: f64, dimensions: &[(&str, &str)], at_ms: i64) -> String {
    debug_assert!(
        metric
            .dimension_sets
            .iter()
            .flat_map(|set| set.iter())
            .all(|d| dimensions.iter().any(|(k, _)| k == d)),
        "{}: every dimension of its sets must be given",
        metric.name
    );
    let mut doc = json!({
        "_aws": {
            "Timestamp": at_ms,
            "CloudWatchMetrics": [{
                "Namespace": NAMESPACE,
                "Dimensions": metric.dimension_sets,
                "Metrics": [{"Name": metric.name, "Unit": metric.unit}],
            }],
        },
    });
    doc[metric.name] = json!(value);
    for (k, v) in dimensions {
        doc[*k] = json!(v);
    }
    doc.to_string()
}

/// Emits one EMF line on stdout. Hand-written rather than with `metrics_cloudwatch_embedded`:
/// five metrics, one line each, no global recorder or per-invocation flush to wire into three
/// runtimes.
pub fn emit(metric: &Metric, value: f64, dimensions: &[(&str, &str)]) {
    // Only metrics go to stdout; tracing writes to stderr locally and stdout in Lambda — both end
    // up in CloudWatch Logs, where EMF is parsed from any line.
    println!(
        "{}",
        emf_line(metric, value, dimensions, crate::clock::now_epoch_millis())
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_emf_line_names_namespace_metric_and_every_dimension_set() {
        let line = emf_line(
            &STRIPE_EVENTS,
            1.0,
            &[("EventType", "invoice.paid"), ("Status", "failed")],
            1_700_000_000_000,
        );
        let doc: serde_json::Value = serde_json::from_str(&line).unwrap();
        assert_eq!(
            doc,
            json!({
                "_aws": {
                    "Timestamp": 1_700_000_000_000_i64,
                    "CloudWatchMetrics": [{
                        "Namespace": "Sluice",
                        "Dimensions": [["Status"], ["EventType", "Status"]],
                        "Metrics": [{"Name": "StripeEvents", "Unit": "Count"}],
                    }],
                },
                "StripeEvents": 1.0,
                "EventType": "invoice.paid",
                "Status": "failed",
            })
        );
    }

    #[test]
    fn a_metric_without_dimensions_has_one_empty_set() {
        let line = emf_line(&DELIVERY_LATENCY, 12.5, &[], 0);
        let doc: serde_json::Value = serde_json::from_str(&line).unwrap();
        assert_eq!(
            doc["_aws"]["CloudWatchMetrics"][0]["Dimensions"],
            json!([[]])
        );
        assert_eq!(doc["DeliveryLatency"], json!(12.5));
    }

    #[test]
    fn a_sweep_reports_what_it_recovered_as_one_metric_without_dimensions() {
        let line = emf_line(&RECONCILE_RECOVERED, 3.0, &[], 1_700_000_000_000);
        let doc: serde_json::Value = serde_json::from_str(&line).unwrap();
        assert_eq!(
            doc,
            json!({
                "_aws": {
                    "Timestamp": 1_700_000_000_000_i64,
                    "CloudWatchMetrics": [{
                        "Namespace": "Sluice",
                        "Dimensions": [[]],
                        "Metrics": [{"Name": "ReconcileRecovered", "Unit": "Count"}],
                    }],
                },
                "ReconcileRecovered": 3.0,
            })
        );
    }

    #[test]
    #[cfg(debug_assertions)]
    #[should_panic(expected = "every dimension")]
    fn a_missing_dimension_is_a_bug() {
        emf_line(&DELIVERIES, 1.0, &[], 0);
    }
}

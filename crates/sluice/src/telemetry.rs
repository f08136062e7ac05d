//! Logging and metrics.
//!
//! Logs are `tracing` events, JSON in Lambda (where `AWS_LAMBDA_FUNCTION_NAME` is set) and
//! human-readable locally. Metrics are CloudWatch Embedded Metric Format lines on stdout, which
//! Lambda's log pipeline turns into metrics without an API call.

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

/// Emits one EMF line: `metric` counted `value` times under `Sluice` with the given dimensions.
pub fn emit_metric(metric: &str, unit: &str, value: f64, dimensions: &[(&str, &str)]) {
    let mut doc = json!({
        "_aws": {
            "Timestamp": crate::clock::now_epoch_millis(),
            "CloudWatchMetrics": [{
                "Namespace": "Sluice",
                "Dimensions": [dimensions.iter().map(|(k, _)| *k).collect::<Vec<_>>()],
                "Metrics": [{"Name": metric, "Unit": unit}],
            }],
        },
    });
    doc[metric] = json!(value);
    for (k, v) in dimensions {
        doc[*k] = json!(v);
    }
    // Only metrics go to stdout; tracing writes to stderr locally and stdout in Lambda — both end
    // up in CloudWatch Logs, where EMF is parsed from any line.
    println!("{doc}");
}

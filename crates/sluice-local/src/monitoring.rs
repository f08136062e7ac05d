//! The template's alarms and dashboard against the metrics the code emits
//! (`sluice::telemetry`): a renamed metric, namespace or dimension fails a test here instead of
//! leaving an alarm that can never fire. No AWS requests.

use anyhow::{Context, anyhow};
use serde_yaml::Value;
use sluice::telemetry::{self, Metric};

/// One Sluice metric named by the template: where, which metric, which dimensions (name, value).
#[derive(Clone, Debug, PartialEq)]
pub struct MetricRef {
    pub place: String,
    pub name: String,
    pub dimensions: Vec<(String, String)>,
}

/// Every `Sluice`-namespace metric the template's alarms and dashboards name.
pub fn template_metric_refs(yaml: &str) -> anyhow::Result<Vec<MetricRef>> {
    let doc: Value = serde_yaml::from_str(yaml).context("template.yaml is not YAML")?;
    let resources = doc
        .get("Resources")
        .and_then(Value::as_mapping)
        .ok_or_else(|| anyhow!("template.yaml has no Resources"))?;
    let mut refs = Vec::new();
    for (id, res) in resources {
        let id = id.as_str().unwrap_or_default();
        let props = res.get("Properties");
        match res.get("Type").and_then(Value::as_str) {
            Some("AWS::CloudWatch::Alarm") => {
                let props = props.ok_or_else(|| anyhow!("{id}: no Properties"))?;
                if props.get("Namespace").and_then(Value::as_str) != Some(telemetry::NAMESPACE) {
                    continue;
                }
                let name = props
                    .get("MetricName")
                    .and_then(Value::as_str)
                    .ok_or_else(|| anyhow!("{id}: MetricName is not a literal"))?;
                let dimensions = props
                    .get("Dimensions")
                    .and_then(Value::as_sequence)
                    .into_iter()
                    .flatten()
                    .map(|d| {
                        let field = |k: &str| {
                            d.get(k)
                                .and_then(Value::as_str)
                                .map(str::to_owned)
                                .ok_or_else(|| anyhow!("{id}: dimension {k} is not a literal"))
                        };
                        Ok((field("Name")?, field("Value")?))
                    })
                    .collect::<anyhow::Result<_>>()?;
                refs.push(MetricRef {
                    place: id.to_owned(),
                    name: name.to_owned(),
                    dimensions,
                });
            }
            Some("AWS::CloudWatch::Dashboard") => {
                let body = match props.and_then(|p| p.get("DashboardBody")) {
                    Some(Value::Tagged(t)) if t.tag == "Sub" => t.value.as_str(),
                    Some(v) => v.as_str(),
                    None => None,
                }
                .ok_or_else(|| anyhow!("{id}: DashboardBody is not a string"))?;
                let body: serde_json::Value = serde_json::from_str(body)
                    .with_context(|| format!("{id}: DashboardBody is not JSON"))?;
                let widgets = body["widgets"].as_array().into_iter().flatten();
                for widget in widgets {
                    let title = widget["properties"]["title"].as_str().unwrap_or("?");
                    let metrics = widget["properties"]["metrics"].as_array();
                    for row in metrics.into_iter().flatten() {
                        let row = row.as_array().ok_or_else(|| anyhow!("{id}: bad row"))?;
                        let strings: Vec<&str> =
                            row.iter().map_while(serde_json::Value::as_str).collect();
                        if strings.first() != Some(&telemetry::NAMESPACE) {
                            continue;
                        }
                        let name = strings
                            .get(1)
                            .ok_or_else(|| anyhow!("{id} {title}: a row without a metric"))?;
                        let dimensions = strings[2..]
                            .chunks(2)
                            .map(|p| (p[0].to_owned(), p.get(1).unwrap_or(&"").to_string()))
                            .collect();
                        refs.push(MetricRef {
                            place: format!("{id} \"{title}\""),
                            name: (*name).to_owned(),
                            dimensions,
                        });
                    }
                }
            }
            _ => {}
        }
    }
    Ok(refs)
}

/// What is wrong with one reference: an unknown metric, or dimensions that are not exactly one
/// of its dimension sets (CloudWatch would show nothing).
pub fn problem(r: &MetricRef, emitted: &[&Metric]) -> Option<String> {
    let Some(metric) = emitted.iter().find(|m| m.name == r.name) else {
        return Some(format!(
            "{}: metric {}/{} is not emitted by the code",
            r.place,
            telemetry::NAMESPACE,
            r.name
        ));
    };
    let mut names: Vec<&str> = r.dimensions.iter().map(|(k, _)| k.as_str()).collect();
    names.sort_unstable();
    let matches = metric.dimension_sets.iter().any(|set| {
        let mut set = set.to_vec();
        set.sort_unstable();
        set == names
    });
    (!matches).then(|| {
        format!(
            "{}: {} has dimension sets {:?}, not {names:?}",
            r.place, r.name, metric.dimension_sets
        )
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::provision::TEMPLATE_YAML;

    fn refs() -> Vec<MetricRef> {
        template_metric_refs(TEMPLATE_YAML).unwrap()
    }

    #[test]
    fn every_sluice_metric_in_alarms_and_dashboard_is_emitted_with_those_dimensions() {
        let refs = refs();
        assert!(refs.len() >= 10, "{refs:?}");
        let problems: Vec<String> = refs
            .iter()
            .filter_map(|r| problem(r, telemetry::METRICS))
            .collect();
        assert_eq!(problems, Vec::<String>::new());
    }

    #[test]
    fn the_failure_alarms_watch_the_values_the_code_emits_for_failures() {
        let refs = refs();
        let alarm = |id: &str| {
            refs.iter()
                .find(|r| r.place == id)
                .unwrap_or_else(|| panic!("{id} alarm"))
                .clone()
        };
        let failed = alarm("StripeEventsFailedAlarm");
        assert_eq!(failed.name, telemetry::STRIPE_EVENTS.name);
        assert_eq!(
            failed.dimensions,
            [(
                "Status".into(),
                sluice::stripe::store::EventStatus::Failed.as_str().into()
            )]
        );
        let exhausted = alarm("DeliveriesExhaustedAlarm");
        assert_eq!(exhausted.name, telemetry::DELIVERIES.name);
        assert_eq!(
            exhausted.dimensions,
            [("Outcome".into(), sluice::fanout::status::FAILED.into())]
        );
        // A sweep that recovers any event means Stripe's webhooks are not arriving.
        let recovered = alarm("ReconcileRecoveredAlarm");
        assert_eq!(recovered.name, telemetry::RECONCILE_RECOVERED.name);
        assert!(recovered.dimensions.is_empty(), "{recovered:?}");
    }

    #[test]
    fn a_renamed_metric_or_dimension_is_caught() {
        let renamed = TEMPLATE_YAML.replace("MetricName: StripeEvents", "MetricName: StripeEvent");
        let bad: Vec<_> = template_metric_refs(&renamed)
            .unwrap()
            .iter()
            .filter_map(|r| problem(r, telemetry::METRICS))
            .collect();
        assert_eq!(bad.len(), 1, "{bad:?}");
        let r = MetricRef {
            place: "x".into(),
            name: "Deliveries".into(),
            dimensions: vec![("Status".into(), "failed".into())],
        };
        assert!(problem(&r, telemetry::METRICS).is_some());
    }
}

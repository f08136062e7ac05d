//! Hourly statistics counters: `STATS#{YYYY-MM-DDTHH}` / `STATS#{shard}`.
//!
//! Counters are flat numeric attributes `ADD`ed by the very writes that change what they count,
//! so reading statistics never scans the table: a window of N hours is N × [`SHARDS`] keys of
//! `BatchGetItem` (one request for 24 hours).
//!
//! Every Stripe event's transaction updates a counter item, so one item per hour would be a hot
//! spot: DynamoDB cancels concurrent transactions on one item (`TransactionConflict`). Each write
//! picks one of [`SHARDS`] items of its hour at random, and readers sum them all (a count moved
//! from one status to another may then be negative in one shard; only sums are reported).
//!
//! | attribute | meaning |
//! |---|---|
//! | `events` | Stripe events received in the hour |
//! | `event_status#{status}` | of those, how many are now in `status` (moved when the status changes) |
//! | `event_type#{type}` | of those, how many had `type` |
//! | `delivery#{outcome}` | egress delivery attempts that ended with `outcome` in the hour (`succeeded`, `failed`, `retried`, …) |
//! | `reconcile#{count}` | Stripe reconciliation sweeps that ended in the hour (`runs`), and what they found: events `listed`, `recovered`, `duplicates`, `failed` |
//!
//! An event's status counters live in the bucket of the hour it was *received*, so a status
//! change (e.g. `unmatched` → `processed`, `failed` → `processed` on retry) moves one count within
//! that bucket and a window's counts by status always add up to its events.

use std::collections::{BTreeMap, HashMap};

use aws_sdk_dynamodb::{
    Client,
    types::{AttributeValue, KeysAndAttributes, TransactWriteItem, Update},
};
use serde::Serialize;

use crate::{
    ApiError, clock,
    table::{self, Item, n},
};

/// Counter of Stripe events received in the hour.
pub const EVENTS: &str = "events";
const EVENT_STATUS: &str = "event_status#";
const EVENT_TYPE: &str = "event_type#";
const DELIVERY: &str = "delivery#";
const RECONCILE: &str = "reconcile#";
/// Statistics items outlive the longest window anyone asks for.
const STATS_RETENTION_DAYS: u32 = 90;
/// Counter items per hour.
pub const SHARDS: u8 = 4;
/// The longest window `read_window` sums (30 days).
pub const MAX_WINDOW_HOURS: u32 = 720;

/// Counter increments for one hourly item, turned into one `Update` that callers put in their
/// own transaction (or send alone).
#[derive(Clone, Debug, Default, PartialEq)]
pub struct StatsDelta {
    hour: String,
    adds: BTreeMap<String, i64>,
}

impl StatsDelta {
    /// Increments for the bucket holding `epoch_secs`.
    pub fn at(epoch_secs: i64) -> Self {
        StatsDelta {
            hour: clock::hour_of(epoch_secs),
            adds: BTreeMap::new(),
        }
    }

    /// Increments for the current hour.
    pub fn now() -> Self {
        Self::at(clock::now_epoch())
    }

    /// The bucket, `YYYY-MM-DDTHH`.
    pub fn hour(&self) -> &str {
        &self.hour
    }

    fn add(&mut self, name: String, by: i64) -> &mut Self {
        *self.adds.entry(name).or_default() += by;
        self.adds.retain(|_, v| *v != 0);
        self
    }

    /// A Stripe event was received and stored with `status`.
    pub fn event_received(&mut self, event_type: &str, status: &str) -> &mut Self {
        self.add(EVENTS.to_owned(), 1);
        self.add(format!("{EVENT_TYPE}{event_type}"), 1);
        self.add(format!("{EVENT_STATUS}{status}"), 1)
    }

    /// A stored event (received in this delta's hour) moved from `from` to `to`.
    pub fn event_status_changed(&mut self, from: &str, to: &str) -> &mut Self {
        if from != to {
            self.add(format!("{EVENT_STATUS}{from}"), -1);
            self.add(format!("{EVENT_STATUS}{to}"), 1);
        }
        self
    }

    /// One egress delivery attempt ended with `outcome` (`succeeded`, `failed`, `retried`, …).
    pub fn delivery(&mut self, outcome: &str) -> &mut Self {
        self.add(format!("{DELIVERY}{outcome}"), 1)
    }

    /// One reconciliation sweep ended, having found `found`.
    pub fn reconcile_run(&mut self, found: &SweepCounts) -> &mut Self {
        self.add(format!("{RECONCILE}runs"), 1);
        self.add(format!("{RECONCILE}listed"), found.listed);
        self.add(format!("{RECONCILE}recovered"), found.recovered);
        self.add(format!("{RECONCILE}duplicates"), found.duplicates);
        self.add(format!("{RECONCILE}failed"), found.failed)
    }

    /// True if nothing would change.
    pub fn is_empty(&self) -> bool {
        self.adds.is_empty()
    }

    /// The `Update` that applies these increments (creating the hourly item if needed).
    pub fn to_update(&self, table_name: &str) -> Update {
        let mut names = HashMap::from([("#ttl".to_owned(), table::TTL.to_owned())]);
        let mut values = HashMap::from([(
            ":ttl".to_owned(),
            n(clock::now_epoch() + clock::days(STATS_RETENTION_DAYS)),
        )]);
        let mut adds = Vec::with_capacity(self.adds.len());
        for (i, (name, by)) in self.adds.iter().enumerate() {
            names.insert(format!("#c{i}"), name.clone());
            values.insert(format!(":c{i}"), n(by));
            adds.push(format!("#c{i} :c{i}"));
        }
        let mut expression = "SET #ttl = :ttl".to_owned();
        if !adds.is_empty() {
            expression.push_str(" ADD ");
            expression.push_str(&adds.join(", "));
        }
        Update::builder()
            .table_name(table_name)
            .set_key(Some(table::key(
                table::stats_pk(&self.hour),
                table::stats_sk(crate::ids::random_bytes::<1>()[0] % SHARDS),
            )))
            .update_expression(expression)
            .set_expression_attribute_names(Some(names))
            .set_expression_attribute_values(Some(values))
            .build()
            .expect("table, key and expression set")
    }

    /// The same update as an item of a `TransactWriteItems`.
    pub fn to_transact_item(&self, table_name: &str) -> TransactWriteItem {
        TransactWriteItem::builder()
            .update(self.to_update(table_name))
            .build()
    }

    /// Sends the update on its own (one `UpdateItem`).
    pub async fn send(&self, db: &Client, table_name: &str) -> Result<(), ApiError> {
        if self.is_empty() {
            return Ok(());
        }
        let u = self.to_update(table_name);
        db.update_item()
            .table_name(table_name)
            .set_key(Some(u.key().clone()))
            .update_expression(u.update_expression())
            .set_expression_attribute_names(u.expression_attribute_names().cloned())
            .set_expression_attribute_values(u.expression_attribute_values().cloned())
            .send()
            .await?;
        Ok(())
    }
}

/// Counts one egress delivery outcome in the current hour (one `UpdateItem`).
pub async fn record_delivery_outcome(
    db: &Client,
    table_name: &str,
    outcome: &str,
) -> Result<(), ApiError> {
    StatsDelta::now()
        .delivery(outcome)
        .send(db, table_name)
        .await
}

/// What reconciliation sweeps found: one run's, or a window's sums.
#[derive(Clone, Debug, Default, PartialEq, Serialize, utoipa::ToSchema)]
pub struct SweepCounts {
    /// Events Stripe listed (every one is either recovered or a duplicate, unless it did not
    /// decode or the run's time budget ran out first).
    #[schema(minimum = 0)]
    pub listed: i64,
    /// Events stored by the sweep: their webhook had not arrived.
    #[schema(minimum = 0)]
    pub recovered: i64,
    /// Events already stored (their webhook had arrived).
    #[schema(minimum = 0)]
    pub duplicates: i64,
    /// Of `recovered`, those stored `failed`.
    #[schema(minimum = 0)]
    pub failed: i64,
}

/// The reconciliation sweep in a statistics window.
#[derive(Clone, Debug, Default, PartialEq, Serialize, utoipa::ToSchema)]
pub struct ReconcileStats {
    /// Sweeps that ended in the window (scheduled, `make dev`'s timer, or
    /// `POST /admin/stripe/reconcile`).
    #[schema(minimum = 0)]
    pub runs: i64,
    /// What they found, summed.
    #[serde(flatten)]
    pub found: SweepCounts,
    /// When the last sweep ended (epoch seconds), inside the window or not; `null` before the
    /// first. Read from the sweep's state item, not the hourly counters.
    pub last_run_at: Option<i64>,
    /// The stored checkpoint (epoch seconds): Stripe's events created before it are all stored.
    /// From the sweep's state item.
    pub checkpoint: Option<i64>,
}

/// Sums of a window of hourly counters.
#[derive(Clone, Debug, Default, PartialEq, Serialize, utoipa::ToSchema)]
pub struct WindowStats {
    /// Hours summed, ending with the current one.
    pub hours: u32,
    /// Stripe events received in the window.
    pub events: i64,
    /// Of those, by current status.
    pub events_by_status: BTreeMap<String, i64>,
    /// Of those, by Stripe type.
    pub events_by_type: BTreeMap<String, i64>,
    /// `failed` events / events (0 when there were none).
    pub failure_rate: f64,
    /// Egress delivery attempts by outcome.
    pub deliveries_by_outcome: BTreeMap<String, i64>,
    /// `failed` / (`succeeded` + `failed`) deliveries (0 when there were none).
    pub delivery_failure_rate: f64,
    /// Reconciliation sweeps and what they found.
    pub reconcile: ReconcileStats,
}

impl WindowStats {
    fn fold(&mut self, item: &Item) {
        for (name, value) in item {
            let Some(count) = value.as_n().ok().and_then(|v| v.parse::<i64>().ok()) else {
                continue;
            };
            if name == EVENTS {
                self.events += count;
            } else if let Some(status) = name.strip_prefix(EVENT_STATUS) {
                *self.events_by_status.entry(status.to_owned()).or_default() += count;
            } else if let Some(kind) = name.strip_prefix(EVENT_TYPE) {
                *self.events_by_type.entry(kind.to_owned()).or_default() += count;
            } else if let Some(outcome) = name.strip_prefix(DELIVERY) {
                *self
                    .deliveries_by_outcome
                    .entry(outcome.to_owned())
                    .or_default() += count;
            } else if let Some(counter) = name.strip_prefix(RECONCILE) {
                let r = &mut self.reconcile;
                match counter {
                    "runs" => r.runs += count,
                    "listed" => r.found.listed += count,
                    "recovered" => r.found.recovered += count,
                    "duplicates" => r.found.duplicates += count,
                    "failed" => r.found.failed += count,
                    _ => {}
                }
            }
        }
    }

    fn finish(&mut self) {
        // A status count moved out of a bucket whose increment is older than the window cannot
        // go below zero in a meaningful report.
        self.events_by_status.retain(|_, v| *v > 0);
        self.events_by_type.retain(|_, v| *v > 0);
        self.deliveries_by_outcome.retain(|_, v| *v > 0);
        let failed = self.events_by_status.get("failed").copied().unwrap_or(0);
        self.failure_rate = ratio(failed, self.events);
        let d_failed = self
            .deliveries_by_outcome
            .get("failed")
            .copied()
            .unwrap_or(0);
        let d_ok = self
            .deliveries_by_outcome
            .get("succeeded")
            .copied()
            .unwrap_or(0);
        self.delivery_failure_rate = ratio(d_failed, d_failed + d_ok);
    }

    /// Sums already-read hourly items (exposed for tests and for callers that read them).
    pub fn from_items<'a>(hours: u32, items: impl IntoIterator<Item = &'a Item>) -> Self {
        let mut stats = WindowStats {
            hours,
            ..Default::default()
        };
        for item in items {
            stats.fold(item);
        }
        stats.finish();
        stats
    }
}

fn ratio(part: i64, whole: i64) -> f64 {
    if whole <= 0 {
        0.0
    } else {
        // Rounded to 4 places so that JSON shows 0.1 rather than 0.1000000000000000055.
        ((part.max(0) as f64 / whole as f64) * 10_000.0).round() / 10_000.0
    }
}

/// The hour buckets of the last `hours` hours ending at `now_epoch`, newest first.
pub fn window_hours(now_epoch: i64, hours: u32) -> Vec<String> {
    (0..i64::from(hours))
        .map(|i| clock::hour_of(now_epoch - i * 3600))
        .collect()
}

/// Sums the hourly counters of the last `hours` hours (1..=720), current hour included, with
/// `BatchGetItem` (100 keys per request; no scan).
pub async fn read_window(
    db: &Client,
    table_name: &str,
    hours: u32,
) -> Result<WindowStats, ApiError> {
    let hours = hours.clamp(1, MAX_WINDOW_HOURS);
    let keys: Vec<Item> = window_hours(clock::now_epoch(), hours)
        .iter()
        .flat_map(|h| {
            (0..SHARDS).map(move |shard| table::key(table::stats_pk(h), table::stats_sk(shard)))
        })
        .collect();
    let mut items = Vec::new();
    for chunk in keys.chunks(100) {
        let mut pending = Some(
            KeysAndAttributes::builder()
                .set_keys(Some(chunk.to_vec()))
                .build()
                .expect("keys set"),
        );
        // Unprocessed keys (throttling) are asked for again, a bounded number of times.
        for _ in 0..5 {
            let Some(request) = pending.take() else { break };
            let out = db
                .batch_get_item()
                .request_items(table_name, request)
                .send()
                .await?;
            if let Some(found) = out.responses().and_then(|r| r.get(table_name)) {
                items.extend(found.iter().cloned());
            }
            pending = out
                .unprocessed_keys()
                .and_then(|u| u.get(table_name))
                .filter(|k| !k.keys().is_empty())
                .cloned();
        }
        if pending.is_some() {
            return Err(ApiError::internal(anyhow::anyhow!(
                "statistics: keys left unprocessed after retries"
            )));
        }
    }
    Ok(WindowStats::from_items(hours, &items))
}

#[allow(dead_code)]
fn _assert_attribute_value_is_used(_: AttributeValue) {}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_delta_adds_flat_counters_in_one_update() {
        let mut d = StatsDelta::at(3600 * 5 + 10);
        d.event_received("invoice.paid", "processed");
        d.delivery("succeeded");
        assert_eq!(d.hour(), "1970-01-01T05");
        let u = d.to_update("t");
        assert_eq!(u.key()[table::PK].as_s().unwrap(), "STATS#1970-01-01T05");
        let shard = u.key()[table::SK].as_s().unwrap();
        assert!((0..SHARDS).any(|s| *shard == table::stats_sk(s)), "{shard}");
        let expr = u.update_expression();
        assert!(expr.starts_with("SET #ttl = :ttl ADD "), "{expr}");
        let names: Vec<&String> = u.expression_attribute_names().unwrap().values().collect();
        for want in [
            "events",
            "event_type#invoice.paid",
            "event_status#processed",
            "delivery#succeeded",
        ] {
            assert!(names.iter().any(|n| *n == want), "{want} in {names:?}");
        }
    }

    #[test]
    fn a_status_change_moves_one_count_and_a_no_op_is_empty() {
        let mut d = StatsDelta::at(0);
        d.event_status_changed("unmatched", "unmatched");
        assert!(d.is_empty());
        d.event_status_changed("failed", "processed");
        let u = d.to_update("t");
        let values = u.expression_attribute_values().unwrap();
        let mut adds: Vec<String> = values
            .iter()
            .filter(|(k, _)| k.starts_with(":c"))
            .map(|(_, v)| v.as_n().unwrap().clone())
            .collect();
        adds.sort();
        assert_eq!(adds, vec!["-1", "1"]);
    }

    #[test]
    fn a_window_sums_items_and_computes_rates() {
        let mut a = StatsDelta::at(0);
        a.event_received("invoice.paid", "processed")
            .event_received("invoice.paid", "failed")
            .event_received("plan.created", "ignored")
            .delivery("succeeded")
            .delivery("retried");
        let mut b = StatsDelta::at(3600);
        b.event_received("invoice.paid", "processed")
            .event_received("x", "processed")
            .delivery("failed");
        let item =
            |d: &StatsDelta| -> Item { d.adds.iter().map(|(k, v)| (k.clone(), n(v))).collect() };
        let stats = WindowStats::from_items(2, &[item(&a), item(&b)]);
        assert_eq!(stats.events, 5);
        assert_eq!(stats.events_by_status["processed"], 3);
        assert_eq!(stats.events_by_status["failed"], 1);
        assert_eq!(stats.events_by_type["invoice.paid"], 3);
        assert_eq!(stats.failure_rate, 0.2);
        assert_eq!(stats.deliveries_by_outcome["retried"], 1);
        assert_eq!(stats.delivery_failure_rate, 0.5);
        assert_eq!(WindowStats::from_items(1, &[]).failure_rate, 0.0);
    }

    #[test]
    fn sweeps_are_counted_per_run_and_summed_over_the_window() {
        let found = SweepCounts {
            listed: 5,
            recovered: 2,
            duplicates: 3,
            failed: 1,
        };
        let mut a = StatsDelta::at(0);
        a.reconcile_run(&found);
        let mut b = StatsDelta::at(3600);
        b.reconcile_run(&SweepCounts::default());
        let names: Vec<String> = a
            .to_update("t")
            .expression_attribute_names()
            .unwrap()
            .values()
            .cloned()
            .collect();
        for want in [
            "reconcile#runs",
            "reconcile#listed",
            "reconcile#recovered",
            "reconcile#duplicates",
            "reconcile#failed",
        ] {
            assert!(names.iter().any(|n| n == want), "{want} in {names:?}");
        }
        let item =
            |d: &StatsDelta| -> Item { d.adds.iter().map(|(k, v)| (k.clone(), n(v))).collect() };
        let stats = WindowStats::from_items(2, &[item(&a), item(&b)]);
        assert_eq!(
            stats.reconcile,
            ReconcileStats {
                runs: 2,
                found,
                last_run_at: None,
                checkpoint: None,
            }
        );
        // A run that found nothing still counts as a run.
        assert_eq!(WindowStats::from_items(1, &[item(&b)]).reconcile.runs, 1);
        assert_eq!(stats.events, 0);
    }

    #[test]
    fn window_hours_end_with_the_current_hour() {
        let hours = window_hours(3600 * 30 + 5, 3);
        assert_eq!(
            hours,
            vec!["1970-01-02T06", "1970-01-02T05", "1970-01-02T04"]
        );
    }
}

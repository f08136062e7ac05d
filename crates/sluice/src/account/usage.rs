//! Daily usage and credit totals, kept as counters written in the same transaction as the debit
//! or credit they count (`GET /v1/usage/summary`, the portal's chart). No scan, no ledger read.
//!
//! Items, under the tenant's partition:
//! - `USAGE#total#{YYYY-MM-DD}`: `usage_minor` (debits) and `credits_minor` (top-ups), `ADD`ed;
//! - `USAGE#dim#{key}#{YYYY-MM-DD}#{value}`: `usage_minor` for each dimension of a debit
//!   (`POST /v1/usage {"dimensions": {"provider": "openai"}}`: at most [`MAX_DIMENSIONS`] keys).
//!
//! Costs: a debit's transaction carries 1 + (its dimensions, ≤ 3) counter updates (unconditional
//! `ADD`s: they never cancel it); a credit, 1. A summary of `d` days is one `Query` of `d` total
//! items, plus, grouped by a key, one `Query` of one item per (day, value of that key used that
//! day) — 30 days are 30 items, plus 30 × the distinct values a day (both queries concurrent,
//! eventually consistent, paged by 1 MB). The number of values is bounded only by what the tenant
//! sends; [`MAX_SUMMARY_DAYS`] bounds the window.

use std::collections::BTreeMap;

use aws_sdk_dynamodb::types::{TransactWriteItem, Update};
use serde::Serialize;
use time::{
    Date, Duration, OffsetDateTime, format_description::BorrowedFormatItem,
    macros::format_description,
};

use super::{LedgerEntry, LedgerKind};
use crate::{
    ApiError, clock,
    table::{self, Item, ItemExt, n, s},
};

/// At most this many dimension keys per debit.
pub const MAX_DIMENSIONS: usize = 3;
/// Longest dimension key (lowercase letters, digits, `_`, `-`, `.`).
pub const MAX_KEY_LEN: usize = 32;
/// Longest dimension value (printable ASCII).
pub const MAX_VALUE_LEN: usize = 64;
/// Longest summary window, in days.
pub const MAX_SUMMARY_DAYS: i64 = 92;
/// Counters are kept this long.
const RETENTION_DAYS: u32 = 400;

const USAGE: &str = "usage_minor";
const CREDITS: &str = "credits_minor";
const DAY: &str = "day";
const VALUE: &str = "value";

static DAY_FORMAT: &[BorrowedFormatItem<'static>] = format_description!("[year]-[month]-[day]");

/// Validated usage dimensions (parse, don't validate: holding one is the proof).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Dimensions(BTreeMap<String, String>);

impl Dimensions {
    /// Checks keys and values; the error names what is wrong.
    pub fn parse(map: BTreeMap<String, String>) -> Result<Self, String> {
        if map.len() > MAX_DIMENSIONS {
            return Err(format!("`dimensions` has at most {MAX_DIMENSIONS} keys"));
        }
        for (k, v) in &map {
            if !valid_key(k) {
                return Err(format!(
                    "dimension key `{k}` must be 1–{MAX_KEY_LEN} lowercase letters, digits, `_`, `-`, `.`"
                ));
            }
            if v.is_empty()
                || v.len() > MAX_VALUE_LEN
                || !v.bytes().all(|b| (0x20..0x7f).contains(&b))
            {
                return Err(format!(
                    "dimension `{k}` must be 1–{MAX_VALUE_LEN} printable ASCII characters"
                ));
            }
        }
        Ok(Dimensions(map))
    }

    /// Key → value.
    pub fn iter(&self) -> impl Iterator<Item = (&String, &String)> {
        self.0.iter()
    }
}

/// A dimension key as `group_by` and [`Dimensions`] accept it.
pub fn valid_key(k: &str) -> bool {
    !k.is_empty()
        && k.len() <= MAX_KEY_LEN
        && k.bytes().all(|b| {
            b.is_ascii_lowercase() || b.is_ascii_digit() || matches!(b, b'_' | b'-' | b'.')
        })
}

/// `YYYY-MM-DD` (UTC) of epoch seconds.
pub fn day_of(epoch_secs: i64) -> String {
    let t = OffsetDateTime::from_unix_timestamp(epoch_secs).unwrap_or(OffsetDateTime::UNIX_EPOCH);
    t.date().format(DAY_FORMAT).unwrap_or_default()
}

/// Parses `YYYY-MM-DD`.
pub fn parse_day(day: &str) -> Option<Date> {
    Date::parse(day, DAY_FORMAT).ok()
}

fn total_sk(day: &str) -> String {
    format!("USAGE#total#{day}")
}

fn dimension_prefix(key: &str) -> String {
    format!("USAGE#dim#{key}#")
}

fn add(
    table_name: &str,
    tenant_id: &str,
    sk: String,
    attribute: &str,
    amount: i64,
    day: &str,
    extra: Option<(&str, &str)>,
) -> TransactWriteItem {
    let mut set = "#day = :day, #ttl = :ttl".to_owned();
    let mut update = Update::builder()
        .table_name(table_name)
        .set_key(Some(table::key(table::tenant_pk(tenant_id), sk)))
        .expression_attribute_names("#amt", attribute)
        .expression_attribute_names("#day", DAY)
        .expression_attribute_names("#ttl", table::TTL)
        .expression_attribute_values(":amt", n(amount))
        .expression_attribute_values(":day", s(day))
        .expression_attribute_values(":ttl", n(clock::now_epoch() + clock::days(RETENTION_DAYS)));
    if let Some((name, value)) = extra {
        set.push_str(", #extra = :extra");
        update = update
            .expression_attribute_names("#extra", name)
            .expression_attribute_values(":extra", s(value));
    }
    let update = update
        .update_expression(format!("SET {set} ADD #amt :amt"))
        .build()
        .expect("table, key and expression are set");
    TransactWriteItem::builder().update(update).build()
}

/// The counter updates of a debit (`entry.amount_minor` < 0), for its transaction: the day's
/// total and one per dimension.
pub fn debit_counter_items(
    table_name: &str,
    tenant_id: &str,
    entry: &LedgerEntry,
    dimensions: &Dimensions,
) -> Vec<TransactWriteItem> {
    debug_assert!(entry.kind == LedgerKind::Debit);
    let day = day_of(entry.created_at);
    let amount = -entry.amount_minor;
    let mut items = vec![add(
        table_name,
        tenant_id,
        total_sk(&day),
        USAGE,
        amount,
        &day,
        None,
    )];
    items.extend(dimensions.iter().map(|(k, v)| {
        let sk = format!("{}{day}#{v}", dimension_prefix(k));
        add(
            table_name,
            tenant_id,
            sk,
            USAGE,
            amount,
            &day,
            Some((VALUE, v)),
        )
    }));
    items
}

/// The counter update of a credit (a top-up), for its transaction.
pub fn credit_counter_item(
    table_name: &str,
    tenant_id: &str,
    entry: &LedgerEntry,
) -> TransactWriteItem {
    debug_assert!(entry.amount_minor > 0);
    let day = day_of(entry.created_at);
    add(
        table_name,
        tenant_id,
        total_sk(&day),
        CREDITS,
        entry.amount_minor,
        &day,
        None,
    )
}

/// One day of a summary.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, utoipa::ToSchema)]
pub struct DayTotals {
    /// `YYYY-MM-DD` (UTC).
    pub date: String,
    /// Debited that day, in minor units.
    pub usage_minor: i64,
    /// Credited that day, in minor units.
    pub credits_minor: i64,
    /// With `group_by`: that day's usage per value of the key (debits without the key are not
    /// in it).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub groups: Option<BTreeMap<String, i64>>,
}

/// The days from `from` to `to` (inclusive) with their totals, zeros where nothing was counted:
/// pure, from the counter items read.
pub fn summarize(from: Date, to: Date, totals: &[Item], groups: Option<&[Item]>) -> Vec<DayTotals> {
    let mut days = Vec::new();
    let mut d = from;
    while d <= to {
        let date = d.format(DAY_FORMAT).unwrap_or_default();
        let total = totals.iter().find(|i| i.get_s(DAY) == Some(date.as_str()));
        days.push(DayTotals {
            usage_minor: total.and_then(|i| i.get_i64(USAGE)).unwrap_or(0),
            credits_minor: total.and_then(|i| i.get_i64(CREDITS)).unwrap_or(0),
            groups: groups.map(|items| {
                items
                    .iter()
                    .filter(|i| i.get_s(DAY) == Some(date.as_str()))
                    .filter_map(|i| Some((i.get_s(VALUE)?.to_owned(), i.get_i64(USAGE)?)))
                    .collect()
            }),
            date,
        });
        d = d.next_day().expect("within the supported range");
    }
    days
}

/// Reads the counters of `from..=to` (at most [`MAX_SUMMARY_DAYS`]; see the module docs for
/// what that costs) and sums them by day.
pub async fn summary(
    db: &aws_sdk_dynamodb::Client,
    table_name: &str,
    tenant_id: &str,
    from: Date,
    to: Date,
    group_by: Option<&str>,
) -> Result<Vec<DayTotals>, ApiError> {
    debug_assert!(from <= to && (to - from) < Duration::days(MAX_SUMMARY_DAYS));
    let (f, t) = (
        from.format(DAY_FORMAT).unwrap_or_default(),
        to.format(DAY_FORMAT).unwrap_or_default(),
    );
    let pk = table::tenant_pk(tenant_id);
    let totals = query_between(db, table_name, &pk, total_sk(&f), total_sk(&t));
    let groups = async {
        match group_by {
            // `$` sorts right after `#`: every value of the last day is below it.
            Some(key) => {
                let prefix = dimension_prefix(key);
                query_between(
                    db,
                    table_name,
                    &pk,
                    format!("{prefix}{f}#"),
                    format!("{prefix}{t}$"),
                )
                .await
                .map(Some)
            }
            None => Ok(None),
        }
    };
    let (totals, groups) = tokio::try_join!(totals, groups)?;
    Ok(summarize(from, to, &totals, groups.as_deref()))
}

async fn query_between(
    db: &aws_sdk_dynamodb::Client,
    table_name: &str,
    pk: &str,
    lo: String,
    hi: String,
) -> Result<Vec<Item>, ApiError> {
    let mut items = Vec::new();
    let mut start = None;
    loop {
        let out = db
            .query()
            .table_name(table_name)
            .key_condition_expression("pk = :pk AND sk BETWEEN :lo AND :hi")
            .expression_attribute_values(":pk", s(pk))
            .expression_attribute_values(":lo", s(lo.as_str()))
            .expression_attribute_values(":hi", s(hi.as_str()))
            .set_exclusive_start_key(start)
            .send()
            .await?;
        items.extend(out.items.unwrap_or_default());
        match out.last_evaluated_key {
            Some(key) if !key.is_empty() => start = Some(key),
            _ => return Ok(items),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn dims(pairs: &[(&str, &str)]) -> Result<Dimensions, String> {
        Dimensions::parse(
            pairs
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
        )
    }

    #[test]
    fn dimensions_are_at_most_three_bounded_keys_and_values() {
        assert!(dims(&[("provider", "openai"), ("model", "gpt-4o")]).is_ok());
        assert!(dims(&[("a", "1"), ("b", "2"), ("c", "3"), ("d", "4")]).is_err());
        assert!(dims(&[("Provider", "x")]).is_err());
        assert!(dims(&[("provider", "")]).is_err());
        assert!(dims(&[("provider", &"x".repeat(65))]).is_err());
        assert!(dims(&[("provider", "é")]).is_err());
        assert!(dims(&[(&"k".repeat(33), "x")]).is_err());
    }

    #[test]
    fn a_summary_has_every_day_with_zeros_and_groups_by_value() {
        let item = |pairs: &[(&str, AttributeValueLike)]| -> Item {
            pairs
                .iter()
                .map(|(k, v)| {
                    (
                        k.to_string(),
                        match v {
                            AttributeValueLike::S(x) => s(*x),
                            AttributeValueLike::N(x) => n(*x),
                        },
                    )
                })
                .collect()
        };
        use AttributeValueLike::{N, S};
        let totals = [item(&[
            (DAY, S("2026-12-02")),
            (USAGE, N(150)),
            (CREDITS, N(2500)),
        ])];
        let groups = [
            item(&[
                (DAY, S("2026-12-02")),
                (VALUE, S("openai")),
                (USAGE, N(100)),
            ]),
            item(&[
                (DAY, S("2026-12-02")),
                (VALUE, S("anthropic")),
                (USAGE, N(50)),
            ]),
        ];
        let days = summarize(
            parse_day("2026-12-01").unwrap(),
            parse_day("2026-12-03").unwrap(),
            &totals,
            Some(&groups),
        );
        assert_eq!(days.len(), 3);
        assert_eq!((days[0].usage_minor, days[0].credits_minor), (0, 0));
        assert_eq!((days[1].usage_minor, days[1].credits_minor), (150, 2500));
        assert_eq!(days[1].groups.as_ref().unwrap()["openai"], 100);
        assert!(days[2].groups.as_ref().unwrap().is_empty());
        assert_eq!(day_of(0), "1970-01-01");
    }

    enum AttributeValueLike {
        S(&'static str),
        N(i64),
    }
}

//! Write helpers: expression placeholders, an update-expression builder, the `TransactWriteItem`
//! builders (put, delete, condition check), the reading of a cancelled transaction's reasons and
//! a failed request's short description.
//!
//! Pure code (no AWS request is made here): the callers send what these build. Hand-written
//! rather than a crate: the well-kept expression crates (`aws-sdk-dynamodb` has none; `serde_dynamo`
//! maps items only) do not cover transactions' cancellation reasons, and this is small.

use std::collections::HashMap;

use aws_sdk_dynamodb::{
    error::{ProvideErrorMetadata, SdkError},
    operation::{
        transact_write_items::TransactWriteItemsError,
        update_item::builders::UpdateItemFluentBuilder,
    },
    types::{
        AttributeValue, CancellationReason, ConditionCheck, Delete, Put,
        ReturnValuesOnConditionCheckFailure, TransactWriteItem, Update,
    },
};

use super::Item;

/// Placeholders of one DynamoDB expression: each call names an attribute or a value and returns
/// the placeholder to write in the expression.
pub trait Placeholders {
    /// `#…` for an attribute name.
    fn name(&mut self, attribute: &str) -> String;
    /// `:…` for a value.
    fn value(&mut self, value: AttributeValue) -> String;
}

/// The names and values of one expression: `#{attribute}` (non-alphanumerics as `_`) and
/// `:v{n}` in order of use.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Expr {
    pub names: HashMap<String, String>,
    pub values: HashMap<String, AttributeValue>,
}

impl Placeholders for Expr {
    fn name(&mut self, attribute: &str) -> String {
        Expr::name(self, attribute)
    }
    fn value(&mut self, v: AttributeValue) -> String {
        Expr::value(self, v)
    }
}

impl Expr {
    /// `#…` for an attribute name (the same placeholder every time for one name).
    pub fn name(&mut self, attribute: &str) -> String {
        let key = format!(
            "#{}",
            attribute.replace(|c: char| !c.is_ascii_alphanumeric(), "_")
        );
        self.names.insert(key.clone(), attribute.to_owned());
        key
    }
    /// `:v{n}` for a value, numbered in order of use.
    pub fn value(&mut self, v: AttributeValue) -> String {
        let key = format!(":v{}", self.values.len());
        self.values.insert(key.clone(), v);
        key
    }
    /// The names, `None` when there are none (DynamoDB rejects an empty map).
    pub fn names(&self) -> Option<HashMap<String, String>> {
        (!self.names.is_empty()).then(|| self.names.clone())
    }
    /// The values, `None` when there are none.
    pub fn values(&self) -> Option<HashMap<String, AttributeValue>> {
        (!self.values.is_empty()).then(|| self.values.clone())
    }
}

/// Expression clauses whose placeholders came from the [`Expr`] they will be built with.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Clauses {
    /// `SET` clauses.
    pub set: Vec<String>,
    /// Attribute placeholders to `REMOVE`.
    pub remove: Vec<String>,
    /// Conditions, all of which must hold.
    pub conditions: Vec<String>,
}

/// An update expression built piece by piece: `SET`, `REMOVE`, `ADD` and conditions, with
/// placeholders for every name and value.
#[derive(Clone, Debug, Default)]
pub struct UpdateBuilder {
    pub expr: Expr,
    sets: Vec<String>,
    removes: Vec<String>,
    adds: Vec<String>,
    conditions: Vec<String>,
    return_old: bool,
}

impl UpdateBuilder {
    /// `SET attribute = value`.
    pub fn set(&mut self, attribute: &str, v: AttributeValue) -> &mut Self {
        let name = self.expr.name(attribute);
        let value = self.expr.value(v);
        self.sets.push(format!("{name} = {value}"));
        self
    }
    /// `SET` when `Some`, `REMOVE` when `None`.
    pub fn set_or_remove(&mut self, attribute: &str, v: Option<AttributeValue>) -> &mut Self {
        match v {
            Some(v) => self.set(attribute, v),
            None => self.remove(attribute),
        }
    }
    /// A `SET` clause written by the caller with placeholders from [`Self::expr`]
    /// (e.g. `#bal = #bal - :v0`).
    pub fn set_clause(&mut self, clause: impl Into<String>) -> &mut Self {
        self.sets.push(clause.into());
        self
    }
    /// `REMOVE attribute`.
    pub fn remove(&mut self, attribute: &str) -> &mut Self {
        let name = self.expr.name(attribute);
        self.removes.push(name);
        self
    }
    /// `ADD attribute value` (a number added, or elements added to a set).
    pub fn add(&mut self, attribute: &str, v: AttributeValue) -> &mut Self {
        let name = self.expr.name(attribute);
        let value = self.expr.value(v);
        self.adds.push(format!("{name} {value}"));
        self
    }
    /// A condition that must hold (all of them are joined with `AND`), with placeholders from
    /// [`Self::expr`].
    pub fn condition(&mut self, condition: impl Into<String>) -> &mut Self {
        self.conditions.push(condition.into());
        self
    }
    /// Clauses built with this builder's [`Self::expr`].
    pub fn merge(&mut self, clauses: Clauses) -> &mut Self {
        self.sets.extend(clauses.set);
        self.removes.extend(clauses.remove);
        self.conditions.extend(clauses.conditions);
        self
    }
    /// Ask for the item as it was when a condition fails (`ALL_OLD`), e.g. to decide again.
    pub fn return_old_on_condition_failure(&mut self) -> &mut Self {
        self.return_old = true;
        self
    }
    /// True if it changes nothing.
    pub fn is_empty(&self) -> bool {
        self.sets.is_empty() && self.removes.is_empty() && self.adds.is_empty()
    }

    /// The update expression: `SET … REMOVE … ADD …` (empty parts left out).
    pub fn update_expression(&self) -> String {
        [
            ("SET", &self.sets),
            ("REMOVE", &self.removes),
            ("ADD", &self.adds),
        ]
        .into_iter()
        .filter(|(_, clauses)| !clauses.is_empty())
        .map(|(keyword, clauses)| format!("{keyword} {}", clauses.join(", ")))
        .collect::<Vec<_>>()
        .join(" ")
    }

    /// The condition expression, `None` without conditions.
    pub fn condition_expression(&self) -> Option<String> {
        (!self.conditions.is_empty()).then(|| self.conditions.join(" AND "))
    }

    /// The `Update` of a transaction.
    pub fn build(&self, table_name: &str, key: Item) -> Update {
        Update::builder()
            .table_name(table_name)
            .set_key(Some(key))
            .update_expression(self.update_expression())
            .set_condition_expression(self.condition_expression())
            .set_expression_attribute_names(self.expr.names())
            .set_expression_attribute_values(self.expr.values())
            .set_return_values_on_condition_check_failure(
                self.return_old
                    .then_some(ReturnValuesOnConditionCheckFailure::AllOld),
            )
            .build()
            .expect("table, key and expression set")
    }

    /// [`Self::build`] as a transaction item.
    pub fn transact_item(&self, table_name: &str, key: Item) -> TransactWriteItem {
        TransactWriteItem::builder()
            .update(self.build(table_name, key))
            .build()
    }

    /// Sets the expressions of an `UpdateItem` request (table, key and return values are the
    /// caller's).
    pub fn apply(&self, request: UpdateItemFluentBuilder) -> UpdateItemFluentBuilder {
        request
            .update_expression(self.update_expression())
            .set_condition_expression(self.condition_expression())
            .set_expression_attribute_names(self.expr.names())
            .set_expression_attribute_values(self.expr.values())
            .set_return_values_on_condition_check_failure(
                self.return_old
                    .then_some(ReturnValuesOnConditionCheckFailure::AllOld),
            )
    }
}

/// The condition of a put, delete or condition check.
#[derive(Clone, Debug, Default)]
pub struct Condition {
    expression: String,
    expr: Expr,
    return_old: bool,
}

impl Condition {
    /// A condition without placeholders (e.g. `attribute_not_exists(pk)`).
    pub fn new(expression: impl Into<String>) -> Self {
        Self::with(expression, Expr::default())
    }
    /// A condition whose placeholders came from `expr`.
    pub fn with(expression: impl Into<String>, expr: Expr) -> Self {
        Condition {
            expression: expression.into(),
            expr,
            return_old: false,
        }
    }
    /// Ask for the item as it was when the condition fails (`ALL_OLD`).
    pub fn returning_old(mut self) -> Self {
        self.return_old = true;
        self
    }
    fn return_values(&self) -> Option<ReturnValuesOnConditionCheckFailure> {
        self.return_old
            .then_some(ReturnValuesOnConditionCheckFailure::AllOld)
    }
}

/// A `Put` transaction item, conditioned when `condition` is given.
pub fn put(table_name: &str, item: Item, condition: Option<Condition>) -> TransactWriteItem {
    let mut b = Put::builder().table_name(table_name).set_item(Some(item));
    if let Some(c) = condition {
        b = b
            .set_return_values_on_condition_check_failure(c.return_values())
            .set_expression_attribute_names(c.expr.names())
            .set_expression_attribute_values(c.expr.values())
            .condition_expression(c.expression);
    }
    TransactWriteItem::builder()
        .put(b.build().expect("table and item set"))
        .build()
}

/// A `Delete` transaction item, conditioned when `condition` is given.
pub fn delete(table_name: &str, key: Item, condition: Option<Condition>) -> TransactWriteItem {
    let mut b = Delete::builder().table_name(table_name).set_key(Some(key));
    if let Some(c) = condition {
        b = b
            .set_return_values_on_condition_check_failure(c.return_values())
            .set_expression_attribute_names(c.expr.names())
            .set_expression_attribute_values(c.expr.values())
            .condition_expression(c.expression);
    }
    TransactWriteItem::builder()
        .delete(b.build().expect("table and key set"))
        .build()
}

/// A `ConditionCheck` transaction item.
pub fn condition_check(table_name: &str, key: Item, condition: Condition) -> TransactWriteItem {
    let check = ConditionCheck::builder()
        .table_name(table_name)
        .set_key(Some(key))
        .set_return_values_on_condition_check_failure(condition.return_values())
        .set_expression_attribute_names(condition.expr.names())
        .set_expression_attribute_values(condition.expr.values())
        .condition_expression(condition.expression)
        .build()
        .expect("table, key and condition set");
    TransactWriteItem::builder().condition_check(check).build()
}

/// What became of one item of a cancelled transaction.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum ItemOutcome<'a> {
    /// Its condition held (or it had none): another item cancelled the transaction.
    Passed,
    /// Its condition failed; the item as it was when asked for (`ALL_OLD`), `None` when not
    /// asked for or absent (an empty map from DynamoDB is read as absent).
    ConditionFailed(Option<&'a Item>),
    /// Another transaction wrote it at the same time: send again.
    Conflict,
    /// Any other code (throttling, validation, …).
    Other(&'a str),
}

/// The outcome of item `index` (past the end reads as [`ItemOutcome::Passed`]).
pub fn item_outcome(reasons: &[CancellationReason], index: usize) -> ItemOutcome<'_> {
    let Some(reason) = reasons.get(index) else {
        return ItemOutcome::Passed;
    };
    match reason.code() {
        None | Some("None") => ItemOutcome::Passed,
        Some("ConditionalCheckFailed") => {
            ItemOutcome::ConditionFailed(reason.item().filter(|i| !i.is_empty()))
        }
        Some("TransactionConflict") => ItemOutcome::Conflict,
        Some(code) => ItemOutcome::Other(code),
    }
}

/// The cancellation reasons of a failed `TransactWriteItems`, one per item in order; `None` if
/// it failed otherwise.
pub fn cancellation_reasons(
    err: &SdkError<TransactWriteItemsError>,
) -> Option<&[CancellationReason]> {
    match err.as_service_error() {
        Some(TransactWriteItemsError::TransactionCanceledException(e)) => {
            Some(e.cancellation_reasons())
        }
        _ => None,
    }
}

/// A short description of a failed DynamoDB request, fit to store or show (the error code only:
/// no request ids, no payloads).
pub fn describe_failure<E: ProvideErrorMetadata, R>(err: &SdkError<E, R>) -> String {
    match err {
        SdkError::ServiceError(e) => format!(
            "DynamoDB rejected the request: {}",
            e.err().code().unwrap_or("unknown error")
        ),
        SdkError::TimeoutError(_) => "DynamoDB did not answer in time".to_owned(),
        SdkError::DispatchFailure(_) => "DynamoDB could not be reached".to_owned(),
        _ => "the DynamoDB request failed".to_owned(),
    }
}

/// True if a `TransactWriteItems` failed because the condition of item `index` did not hold.
pub fn is_condition_failure_at(err: &SdkError<TransactWriteItemsError>, index: usize) -> bool {
    cancellation_reasons(err).is_some_and(|reasons| {
        matches!(
            item_outcome(reasons, index),
            ItemOutcome::ConditionFailed(_)
        )
    })
}

/// How a cancelled transaction failed, as a whole.
#[derive(Clone, Debug, PartialEq)]
pub enum Cancellation {
    /// Conditions did not hold: per item, `Some(old item or empty)` where one failed.
    Conditions(Vec<Option<Item>>),
    /// Another transaction touched the same items at the same time (and no condition failed):
    /// send again.
    Conflict,
    /// Anything else (throttled, rejected).
    Other,
}

/// Reads the reasons of a cancelled transaction: failed conditions first, then conflicts.
pub fn read_cancellation(reasons: &[CancellationReason]) -> Cancellation {
    let outcomes: Vec<_> = (0..reasons.len())
        .map(|i| item_outcome(reasons, i))
        .collect();
    if outcomes
        .iter()
        .any(|o| matches!(o, ItemOutcome::ConditionFailed(_)))
    {
        return Cancellation::Conditions(
            outcomes
                .iter()
                .map(|o| match o {
                    ItemOutcome::ConditionFailed(old) => Some(old.cloned().unwrap_or_default()),
                    _ => None,
                })
                .collect(),
        );
    }
    if outcomes.contains(&ItemOutcome::Conflict) {
        return Cancellation::Conflict;
    }
    Cancellation::Other
}

/// How a `TransactWriteItems` failed.
#[derive(Debug)]
pub enum TxFailure {
    /// Conditions did not hold: per item, `Some(old item or empty)` where one failed.
    Conditions(Vec<Option<Item>>),
    /// Another transaction touched the same items at the same time: send again.
    Conflict,
    /// Anything else (unreachable, throttled beyond the SDK's retries, rejected).
    Other(Box<SdkError<TransactWriteItemsError>>),
}

/// Classifies a failed `TransactWriteItems` (see [`read_cancellation`]).
pub fn classify(err: SdkError<TransactWriteItemsError>) -> TxFailure {
    match cancellation_reasons(&err).map(read_cancellation) {
        Some(Cancellation::Conditions(items)) => TxFailure::Conditions(items),
        Some(Cancellation::Conflict) => TxFailure::Conflict,
        Some(Cancellation::Other) | None => TxFailure::Other(Box::new(err)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::table::{n, s};

    fn reason(code: &str, item: Option<Item>) -> CancellationReason {
        CancellationReason::builder()
            .code(code)
            .set_item(item)
            .build()
    }

    #[test]
    fn an_update_has_set_remove_add_and_conditions_with_placeholders() {
        let mut u = UpdateBuilder::default();
        u.set("status", s("ok"))
            .remove("lease_id")
            .add("count", n(1))
            .set_or_remove("note", None)
            .set_or_remove("url", Some(s("https://x")));
        let bal = u.expr.name("balance_minor");
        let amt = u.expr.value(n(5));
        u.set_clause(format!("{bal} = {bal} - {amt}"))
            .condition("attribute_exists(pk)")
            .condition(format!("{bal} >= {amt}"));
        assert_eq!(
            u.update_expression(),
            "SET #status = :v0, #url = :v2, #balance_minor = #balance_minor - :v3 \
             REMOVE #lease_id, #note ADD #count :v1"
        );
        assert_eq!(
            u.condition_expression().as_deref(),
            Some("attribute_exists(pk) AND #balance_minor >= :v3")
        );
        assert_eq!(u.expr.names["#lease_id"], "lease_id");
        assert_eq!(u.expr.values[":v1"], n(1));
        let update = u.build("t", Item::new());
        assert_eq!(update.return_values_on_condition_check_failure(), None);
        u.return_old_on_condition_failure();
        assert_eq!(
            u.build("t", Item::new())
                .return_values_on_condition_check_failure(),
            Some(&ReturnValuesOnConditionCheckFailure::AllOld)
        );
    }

    #[test]
    fn empty_parts_are_left_out() {
        let mut u = UpdateBuilder::default();
        assert!(u.is_empty());
        u.remove("a");
        assert_eq!(u.update_expression(), "REMOVE #a");
        assert_eq!(u.condition_expression(), None);
        let update = u.build("t", Item::new());
        assert!(update.expression_attribute_values().is_none());
        let mut p = Expr::default();
        assert_eq!(p.name("gsi-1.sk"), "#gsi_1_sk");
        assert_eq!(p.value(n(1)), ":v0");
        assert_eq!(p.value(n(2)), ":v1");
    }

    #[test]
    fn merged_clauses_join_the_expression() {
        let mut u = UpdateBuilder::default();
        let bal = u.expr.name("balance_minor");
        u.merge(Clauses {
            set: vec![format!("{bal} = :x")],
            remove: vec!["#y".into()],
            conditions: vec!["c".into()],
        });
        assert_eq!(u.update_expression(), "SET #balance_minor = :x REMOVE #y");
        assert_eq!(u.condition_expression().as_deref(), Some("c"));
    }

    #[test]
    fn transaction_items_carry_their_conditions() {
        let item = put(
            "t",
            Item::new(),
            Some(Condition::new("attribute_not_exists(pk)")),
        );
        let p = item.put().unwrap();
        assert_eq!(p.condition_expression(), Some("attribute_not_exists(pk)"));
        assert_eq!(p.return_values_on_condition_check_failure(), None);
        assert!(p.expression_attribute_names().is_none());
        assert!(
            put("t", Item::new(), None)
                .put()
                .unwrap()
                .condition_expression()
                .is_none()
        );

        let mut expr = Expr::default();
        let st = expr.name("status");
        let v = expr.value(s("failed"));
        let d = delete(
            "t",
            Item::new(),
            Some(Condition::with(format!("{st} = {v}"), expr).returning_old()),
        );
        let d = d.delete().unwrap();
        assert_eq!(d.condition_expression(), Some("#status = :v0"));
        assert_eq!(d.expression_attribute_names().unwrap()["#status"], "status");
        assert_eq!(
            d.return_values_on_condition_check_failure(),
            Some(&ReturnValuesOnConditionCheckFailure::AllOld)
        );
        let c = condition_check("t", Item::new(), Condition::new("attribute_exists(pk)"));
        assert_eq!(
            c.condition_check().unwrap().condition_expression(),
            "attribute_exists(pk)"
        );
    }

    #[test]
    fn each_items_outcome_is_read_from_its_reason() {
        let old = Item::from([("pk".to_owned(), s("x"))]);
        let reasons = [
            reason("None", None),
            reason("ConditionalCheckFailed", Some(old.clone())),
            reason("ConditionalCheckFailed", Some(Item::new())),
            reason("TransactionConflict", None),
            reason("ThrottlingError", None),
        ];
        assert_eq!(item_outcome(&reasons, 0), ItemOutcome::Passed);
        assert_eq!(
            item_outcome(&reasons, 1),
            ItemOutcome::ConditionFailed(Some(&old))
        );
        assert_eq!(
            item_outcome(&reasons, 2),
            ItemOutcome::ConditionFailed(None)
        );
        assert_eq!(item_outcome(&reasons, 3), ItemOutcome::Conflict);
        assert_eq!(
            item_outcome(&reasons, 4),
            ItemOutcome::Other("ThrottlingError")
        );
        assert_eq!(item_outcome(&reasons, 9), ItemOutcome::Passed);
    }

    #[test]
    fn a_cancellation_names_which_conditions_failed_before_conflicts() {
        let old = Item::from([("pk".to_owned(), s("x"))]);
        assert_eq!(
            read_cancellation(&[
                reason("TransactionConflict", None),
                reason("ConditionalCheckFailed", Some(old.clone())),
                reason("ConditionalCheckFailed", None),
            ]),
            Cancellation::Conditions(vec![None, Some(old), Some(Item::new())])
        );
        assert_eq!(
            read_cancellation(&[reason("None", None), reason("TransactionConflict", None)]),
            Cancellation::Conflict
        );
        assert_eq!(
            read_cancellation(&[reason("ValidationError", None)]),
            Cancellation::Other
        );
    }

    #[test]
    fn a_failure_is_described_by_its_code_only() {
        use aws_sdk_dynamodb::types::error::InternalServerError;
        type Err = SdkError<TransactWriteItemsError, ()>;
        let rejected = Err::service_error(
            TransactWriteItemsError::InternalServerError(
                InternalServerError::builder()
                    .message("secret request detail")
                    .meta(
                        aws_sdk_dynamodb::error::ErrorMetadata::builder()
                            .code("InternalServerError")
                            .message("secret request detail")
                            .build(),
                    )
                    .build(),
            ),
            (),
        );
        assert_eq!(
            describe_failure(&rejected),
            "DynamoDB rejected the request: InternalServerError"
        );
        assert_eq!(
            describe_failure(&Err::timeout_error("attempt timed out")),
            "DynamoDB did not answer in time"
        );
        assert_eq!(
            describe_failure(&Err::dispatch_failure(
                aws_smithy_runtime_api::client::result::ConnectorError::io("reset".into())
            )),
            "DynamoDB could not be reached"
        );
        assert_eq!(
            describe_failure(&Err::response_error("truncated", ())),
            "the DynamoDB request failed"
        );
    }
}

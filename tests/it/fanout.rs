//! Fan-out of outbound events to endpoints: immediate (`publish`), deferred (`Deferred` +
//! `expand`) and `replay` (through the outbox), checked on the queue and in the table.

use serde_json::json;
use sluice::{
    fanout::{self, Deferred, DeliveryMessage, FanoutError},
    replay,
    table::{self, ItemExt, b, s},
};

use crate::support::Stack;

/// Writes an endpoint item in the shape table.rs documents (the API's endpoint routes write the same).
async fn put_endpoint(stack: &Stack, tenant: &str, id: &str, enabled: bool, types: &[&str]) {
    let mut item = table::key(table::tenant_pk(tenant), table::endpoint_sk(id));
    item.insert("id".into(), s(id));
    item.insert("url".into(), s(format!("https://example.com/{id}")));
    item.insert("enabled".into(), b(enabled));
    item.insert(
        "event_types".into(),
        aws_sdk_dynamodb::types::AttributeValue::L(types.iter().map(|t| s(*t)).collect()),
    );
    stack
        .aws
        .dynamodb
        .put_item()
        .table_name(&stack.resources.table_name)
        .set_item(Some(item))
        .send()
        .await
        .unwrap();
}

fn deliver(tenant: &str, event: &str, endpoint: &str, generation: u32) -> DeliveryMessage {
    DeliveryMessage::Deliver {
        tenant_id: tenant.into(),
        event_id: event.into(),
        endpoint_id: endpoint.into(),
        generation,
    }
}

#[tokio::test]
async fn publish_reaches_enabled_subscribed_endpoints_only() {
    let stack = Stack::new().await;
    let t = &stack.resources.table_name;
    put_endpoint(&stack, "tnt_a", "ep_all", true, &[]).await;
    put_endpoint(&stack, "tnt_a", "ep_match", true, &["invoice.paid"]).await;
    put_endpoint(&stack, "tnt_a", "ep_other", true, &["credits.added"]).await;
    put_endpoint(&stack, "tnt_a", "ep_off", false, &[]).await;
    put_endpoint(&stack, "tnt_b", "ep_b", true, &[]).await;

    let (event, mut endpoints) =
        fanout::publish(&stack.aws, t, "tnt_a", "invoice.paid", json!({"n": 1}))
            .await
            .unwrap();
    endpoints.sort();
    assert_eq!(endpoints, ["ep_all", "ep_match"]);
    // Nothing is sent on the request path: the outbox relay sends after the commit.
    assert!(stack.queued_messages().await.is_empty());
    stack.relay_outbox().await;

    let mut messages = stack.queued_messages().await;
    messages.sort_by_key(|m| format!("{m:?}"));
    assert_eq!(
        messages,
        [
            deliver("tnt_a", &event.id, "ep_all", 1),
            deliver("tnt_a", &event.id, "ep_match", 1)
        ]
    );
    let deliveries = fanout::deliveries_of(&stack.aws.dynamodb, t, "tnt_a", &event.id)
        .await
        .unwrap();
    assert_eq!(deliveries.len(), 2);
    for d in deliveries.values() {
        assert_eq!(d.get_s("status"), Some("pending"));
        assert_eq!(d.get_i64("generation"), Some(1));
    }
    let stored = fanout::get_event(&stack.aws.dynamodb, t, "tnt_a", &event.id)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(stored.data, json!({"n": 1}));
    assert!(
        fanout::get_event(&stack.aws.dynamodb, t, "tnt_b", &event.id)
            .await
            .unwrap()
            .is_none(),
        "another tenant does not see the event"
    );
}

#[tokio::test]
async fn a_deferred_event_is_relayed_once_its_transaction_commits_and_a_redelivery_sends_nothing_new()
 {
    let stack = Stack::new().await;
    let (t, r) = (&stack.resources.table_name, &stack.resources.queue_url);
    put_endpoint(&stack, "tnt_a", "ep_1", true, &[]).await;
    let deferred = Deferred::new("tnt_a", "credits.added", json!({"amount_minor": 500}));

    // A cancelled transaction leaves nothing in the outbox.
    let cancelled = stack
        .aws
        .dynamodb
        .transact_write_items()
        .transact_items(deferred.transact_item(t))
        .transact_items(
            aws_sdk_dynamodb::types::TransactWriteItem::builder()
                .condition_check(
                    aws_sdk_dynamodb::types::ConditionCheck::builder()
                        .table_name(t)
                        .key(
                            "pk",
                            aws_sdk_dynamodb::types::AttributeValue::S("nope".into()),
                        )
                        .key(
                            "sk",
                            aws_sdk_dynamodb::types::AttributeValue::S("nope".into()),
                        )
                        .condition_expression("attribute_exists(pk)")
                        .build()
                        .unwrap(),
                )
                .build(),
        )
        .send()
        .await;
    assert!(cancelled.is_err());
    stack.relay_outbox().await;
    assert!(stack.queued_messages().await.is_empty());
    assert!(matches!(
        fanout::expand(&stack.aws, t, r, "tnt_a", &deferred.event.id).await,
        Err(FanoutError::EventNotFound)
    ));

    stack
        .aws
        .dynamodb
        .transact_write_items()
        .transact_items(deferred.transact_item(t))
        .send()
        .await
        .unwrap();
    let drained = stack.relay_outbox().await;
    assert_eq!(
        (drained.invocations, drained.failures),
        (1, 0),
        "{drained:?}"
    );
    let deliveries = fanout::deliveries_of(&stack.aws.dynamodb, t, "tnt_a", &deferred.event.id)
        .await
        .unwrap();
    assert_eq!(deliveries.len(), 1);
    // The expansion's own writes (deliveries, endpoint_ids) are not outbox items.
    assert_eq!(stack.relay_outbox().await.invocations, 0);
    // The same record relayed again (a consumer that crashed before its checkpoint) finds the
    // expansion done: no new delivery item, and the same Deliver message, which the claim makes
    // harmless.
    let (again, _) = stack.relay_outbox_from(Default::default()).await;
    assert_eq!(again.failures, 0);
    let after = fanout::deliveries_of(&stack.aws.dynamodb, t, "tnt_a", &deferred.event.id)
        .await
        .unwrap();
    assert_eq!(after, deliveries);
    assert_eq!(
        stack.queued_messages().await,
        [
            deliver("tnt_a", &deferred.event.id, "ep_1", 1),
            deliver("tnt_a", &deferred.event.id, "ep_1", 1),
        ]
    );
}

#[tokio::test]
async fn replay_bumps_the_generation_and_reaches_new_endpoints_through_the_outbox() {
    let stack = Stack::new().await;
    let t = &stack.resources.table_name;
    let db = &stack.aws.dynamodb;
    put_endpoint(&stack, "tnt_a", "ep_1", true, &[]).await;
    let (event, _) = fanout::publish(&stack.aws, t, "tnt_a", "x.y", json!({}))
        .await
        .unwrap();
    stack.relay_outbox().await;
    stack.queued_messages().await;

    let replayed = replay::replay(db, t, "tnt_a", &event.id, None)
        .await
        .unwrap();
    assert_eq!(replayed, ["ep_1"]);
    put_endpoint(&stack, "tnt_a", "ep_2", true, &[]).await;
    replay::replay(db, t, "tnt_a", &event.id, Some("ep_2"))
        .await
        .unwrap();
    // Nothing is sent by the replay itself: its outbox items are relayed after the commit.
    assert!(stack.queued_messages().await.is_empty());
    let drained = stack.relay_outbox().await;
    assert_eq!((drained.invocations > 0, drained.failures), (true, 0));
    let mut messages = stack.queued_messages().await;
    messages.sort_by_key(|m| format!("{m:?}"));
    assert_eq!(
        messages,
        [
            deliver("tnt_a", &event.id, "ep_1", 2),
            deliver("tnt_a", &event.id, "ep_2", 1)
        ]
    );
    let deliveries = fanout::deliveries_of(db, t, "tnt_a", &event.id)
        .await
        .unwrap();
    assert_eq!(deliveries["ep_2"].get_s("status"), Some("pending"));
    assert_eq!(deliveries["ep_1"].get_i64("generation"), Some(2));
    let stored = fanout::get_event(db, t, "tnt_a", &event.id)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        stored.endpoint_ids,
        Some(vec!["ep_1".into(), "ep_2".into()])
    );

    // Replaying everything now reaches both, each under its next generation.
    replay::replay(db, t, "tnt_a", &event.id, None)
        .await
        .unwrap();
    stack.relay_outbox().await;
    let mut messages = stack.queued_messages().await;
    messages.sort_by_key(|m| format!("{m:?}"));
    assert_eq!(
        messages,
        [
            deliver("tnt_a", &event.id, "ep_1", 3),
            deliver("tnt_a", &event.id, "ep_2", 2)
        ]
    );

    assert!(matches!(
        replay::replay(db, t, "tnt_a", &event.id, Some("ep_nope")).await,
        Err(FanoutError::EndpointNotFound)
    ));
    // An endpoint of another tenant is not this tenant's.
    put_endpoint(&stack, "tnt_b", "ep_b", true, &[]).await;
    assert!(matches!(
        replay::replay(db, t, "tnt_a", &event.id, Some("ep_b")).await,
        Err(FanoutError::EndpointNotFound)
    ));
    assert!(matches!(
        replay::replay(db, t, "tnt_b", &event.id, None).await,
        Err(FanoutError::EventNotFound)
    ));
    // The refused replays wrote nothing to relay.
    stack.relay_outbox().await;
    assert!(stack.queued_messages().await.is_empty());
}

#[tokio::test]
async fn concurrent_replays_each_get_their_own_generation() {
    let stack = Stack::new().await;
    let t = &stack.resources.table_name;
    let db = &stack.aws.dynamodb;
    put_endpoint(&stack, "tnt_a", "ep_1", true, &[]).await;
    let (event, _) = fanout::publish(&stack.aws, t, "tnt_a", "x.y", json!({}))
        .await
        .unwrap();
    stack.relay_outbox().await;
    stack.queued_messages().await;

    let (a, b) = tokio::join!(
        replay::replay(db, t, "tnt_a", &event.id, None),
        replay::replay(db, t, "tnt_a", &event.id, None),
    );
    a.unwrap();
    b.unwrap();
    stack.relay_outbox().await;
    let mut generations: Vec<u32> = stack
        .queued_messages()
        .await
        .into_iter()
        .map(|DeliveryMessage::Deliver { generation, .. }| generation)
        .collect();
    generations.sort();
    assert_eq!(generations, [2, 3]);
}

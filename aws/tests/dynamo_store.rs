//! DynamoLeaseStore against a real DynamoDB API (dynalite from
//! `scripts/emulators.sh`). Each test uses a fresh table.

mod common;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use anyhow::{ensure, Context, Result};
use aws_sdk_dynamodb::config::interceptors::BeforeSerializationInterceptorContextRef;
use aws_sdk_dynamodb::config::{ConfigBag, Intercept};
use aws_sdk_dynamodb::error::BoxError;
use aws_sdk_dynamodb::types::{
    AttributeDefinition, AttributeValue, BillingMode, KeySchemaElement, KeyType,
    ScalarAttributeType,
};
use aws_sdk_dynamodb::Client;
use kinesin_aws::{DynamoLeaseStore, LeaseStore};
use kinesin_core::ids::{ShardId, StreamId};
use kinesin_core::io::ErrorClass;
use kinesin_core::table::{HeartbeatRow, LeaseRow, LeaseWrite};

/// Counts operations sent through the client.
#[derive(Debug, Default, Clone)]
struct CountCalls(Arc<AtomicUsize>);

impl Intercept for CountCalls {
    fn name(&self) -> &'static str {
        "CountCalls"
    }

    fn read_before_execution(
        &self,
        _context: &BeforeSerializationInterceptorContextRef<'_>,
        _cfg: &mut ConfigBag,
    ) -> Result<(), BoxError> {
        self.0.fetch_add(1, Ordering::SeqCst);
        Ok(())
    }
}

/// A client for the emulator named by the environment; fails (never
/// skips) when the emulators are not set up.
async fn client_counting(calls: CountCalls) -> Client {
    if std::env::var_os("AWS_ENDPOINT_URL_DYNAMODB").is_none() {
        panic!(
            "AWS_ENDPOINT_URL_DYNAMODB is not set: these tests need the local DynamoDB emulator. \
             Run `scripts/emulators.sh start` and `eval \"$(scripts/emulators.sh env)\"`, then \
             run the tests again from that shell."
        );
    }
    let shared = aws_config::defaults(aws_config::BehaviorVersion::latest())
        .load()
        .await;
    let config = aws_sdk_dynamodb::config::Builder::from(&shared)
        .interceptor(calls)
        .build();
    Client::from_conf(config)
}

async fn client() -> Client {
    client_counting(CountCalls::default()).await
}

fn table_name(test: &str) -> String {
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or(0);
    format!("kinesin-test-{test}-{}-{nanos}", std::process::id())
}

async fn fresh_store(client: Client, test: &str) -> Result<DynamoLeaseStore> {
    let store = DynamoLeaseStore::new(client, table_name(test));
    store
        .create_table_if_missing()
        .await
        .with_context(|| format!("creating {}", store.table()))?;
    Ok(store)
}

#[tokio::test]
async fn dynamo_lease_life_round_trip() -> Result<()> {
    let store = fresh_store(client().await, "life").await?;
    common::lease_life_round_trip(
        &store,
        "arn:aws:kinesis:us-east-1:000000000000:stream/orders",
    )
    .await
}

#[tokio::test]
async fn dynamo_store_lists_each_stream_with_leases_once() -> Result<()> {
    let store = fresh_store(client().await, "list").await?;
    common::list_streams_names_each_stream_with_leases_once(&store).await
}

#[tokio::test]
async fn dynamo_store_decides_like_lease_write_apply() -> Result<()> {
    let store = fresh_store(client().await, "conformance").await?;
    let (accepted, refused) = common::check_store_matches_apply(&store, "conf").await?;
    eprintln!("conformance: {accepted} accepted, {refused} refused, all as LeaseWrite::apply");
    Ok(())
}

#[tokio::test]
async fn dynamo_heartbeats_round_trip() -> Result<()> {
    let store = fresh_store(client().await, "heartbeats").await?;
    common::heartbeats_round_trip(&store, "orders").await
}

#[tokio::test]
async fn dynamo_reads_follow_every_page() -> Result<()> {
    let calls = CountCalls::default();
    let store = fresh_store(client_counting(calls.clone()).await, "pages")
        .await?
        .with_page_limit(2);
    for i in 0..7 {
        let s = common::shard("paged", &format!("shardId-{i:012}"));
        store
            .write_lease(&LeaseWrite::Create(LeaseRow::new(s, vec![], i)))
            .await?;
    }
    for i in 0..3 {
        let s = common::shard("other", &format!("shardId-{i:012}"));
        store
            .write_lease(&LeaseWrite::Create(LeaseRow::new(s, vec![], i)))
            .await?;
    }
    for worker in ["w1", "w2", "w3", "w4", "w5"] {
        let row = HeartbeatRow {
            owner: kinesin_core::ids::Owner::new(worker, 1),
            beat: 1,
            held: 0,
            wants: vec![],
            alive: true,
            streams: Vec::new(),
        };
        store.write_heartbeat(&row).await?;
    }

    let before = calls.0.load(Ordering::SeqCst);
    let rows = store.read_leases(&StreamId::new("paged")).await?.rows;
    let queries = calls.0.load(Ordering::SeqCst) - before;
    let shards: Vec<ShardId> = rows.into_iter().map(|r| r.shard.shard).collect();
    let expected: Vec<ShardId> = (0..7)
        .map(|i| ShardId::new(format!("shardId-{i:012}")))
        .collect();
    ensure!(shards == expected, "{shards:?}");
    ensure!(
        queries >= 4,
        "7 rows at 2 per page take at least 4 Queries, took {queries}"
    );

    ensure!(store.read_leases(&StreamId::new("other")).await?.rows.len() == 3);
    ensure!(store.read_heartbeats().await?.rows.len() == 5);
    Ok(())
}

#[tokio::test]
async fn dynamo_bad_rows_are_named_and_skipped_and_the_others_read() -> Result<()> {
    let client = client().await;
    let store = fresh_store(client.clone(), "badrow").await?;
    common::add_good_rows(&store, "s").await?;
    // A lease row whose owner has no incarnation, and a heartbeat row whose
    // beat is not a number.
    client
        .put_item()
        .table_name(store.table())
        .item("stream", AttributeValue::S("s".into()))
        .item("key", AttributeValue::S("shard#shardId-7".into()))
        .item("token", AttributeValue::N("1".into()))
        .item("created_ms", AttributeValue::N("1".into()))
        .item("owner", AttributeValue::S("no-incarnation".into()))
        .send()
        .await?;
    client
        .put_item()
        .table_name(store.table())
        .item("stream", AttributeValue::S("#workers".into()))
        .item("key", AttributeValue::S("worker#bad".into()))
        .item("owner", AttributeValue::S("bad#1".into()))
        .item("beat", AttributeValue::S("many".into()))
        .item("held", AttributeValue::N("0".into()))
        .item("alive", AttributeValue::Bool(true))
        .send()
        .await?;
    common::bad_rows_are_named_and_skipped(
        &store,
        "s",
        "shardId-7",
        ("s/shard#shardId-7", "owner"),
        ("#workers/worker#bad", "beat"),
    )
    .await
}

#[tokio::test]
async fn dynamo_missing_table_is_resource_not_found() -> Result<()> {
    let store = DynamoLeaseStore::new(client().await, table_name("missing"));
    let err = store
        .read_leases(&StreamId::new("s"))
        .await
        .expect_err("no such table");
    ensure!(err.class() == ErrorClass::ResourceNotFound, "{err:?}");
    Ok(())
}

#[tokio::test]
async fn dynamo_create_table_is_idempotent_and_checks_the_schema() -> Result<()> {
    let client = client().await;
    let store = fresh_store(client.clone(), "idem").await?;
    store.create_table_if_missing().await?;

    // A table with another key schema is refused, not written into.
    let foreign = table_name("foreign");
    client
        .create_table()
        .table_name(&foreign)
        .billing_mode(BillingMode::PayPerRequest)
        .attribute_definitions(
            AttributeDefinition::builder()
                .attribute_name("id")
                .attribute_type(ScalarAttributeType::S)
                .build()?,
        )
        .key_schema(
            KeySchemaElement::builder()
                .attribute_name("id")
                .key_type(KeyType::Hash)
                .build()?,
        )
        .send()
        .await?;
    let err = DynamoLeaseStore::new(client, foreign)
        .create_table_if_missing()
        .await
        .expect_err("foreign schema");
    ensure!(err.class() == ErrorClass::InvalidArgument, "{err:?}");
    ensure!(err.to_string().contains("key schema"), "{err}");
    Ok(())
}

/// A take conditions on owner and token only, so the row it wins may hold
/// a checkpoint newer than the taker's last read: DynamoDB answers with
/// the row as written (ALL_NEW), and the taker starts from that.
#[tokio::test]
async fn dynamo_store_answers_a_take_with_the_row_as_written() -> Result<()> {
    use kinesin_core::ids::{FencingToken, Owner, ShardRef};
    use kinesin_core::sequence::{Checkpoint, SeqNum};
    let store = fresh_store(client().await, "returning").await?;
    let shard = ShardRef::new(
        StreamId::new("returning"),
        ShardId::new("shardId-000000000000"),
    );
    let (a, b) = (Owner::new("a", 1), Owner::new("b", 1));
    let created = store
        .write_lease_returning(&LeaseWrite::Create(LeaseRow::new(shard.clone(), vec![], 7)))
        .await?;
    ensure!(created.is_some_and(|r| r.token == FencingToken(0)));
    store
        .write_lease(&LeaseWrite::Take {
            shard: shard.clone(),
            expect_owner: None,
            expect_token: FencingToken(0),
            to: a.clone(),
        })
        .await?;
    let cp = Checkpoint::After(SeqNum::parse("4200")?);
    store
        .write_lease(&LeaseWrite::Checkpoint {
            shard: shard.clone(),
            owner: a.clone(),
            token: FencingToken(1),
            checkpoint: cp.clone(),
            serial: 1,
        })
        .await?;
    let taken = store
        .write_lease_returning(&LeaseWrite::Take {
            shard: shard.clone(),
            expect_owner: Some(a),
            expect_token: FencingToken(1),
            to: b.clone(),
        })
        .await?
        .context("DynamoDB answers an UpdateItem with the row as written")?;
    ensure!(
        taken.owner == Some(b)
            && taken.token == FencingToken(2)
            && taken.checkpoint == Some(cp)
            && taken.checkpoint_serial == 0,
        "{taken:?}"
    );
    Ok(())
}

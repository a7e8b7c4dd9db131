//! Enhanced Fan-Out through [`kinesin_async_std::AsyncStdHttpClient`]:
//! every call over TLS with ALPN h2 to kinesis-mock's TLS port, several
//! SubscribeToShard event streams at once, under `async_std::task::block_on`
//! with no tokio runtime.

mod common;

use std::time::{Duration, Instant};

use anyhow::{bail, ensure, Context, Result};
use aws_sdk_kinesis::primitives::Blob;
use aws_sdk_kinesis::types::{
    ConsumerStatus, PutRecordsRequestEntry, ShardIteratorType, StartingPosition,
    SubscribeToShardEventStream,
};
use common::{assert_no_tokio, tls_kinesis, unique, with_stream, within};
use kinesin_async_std::ConnectionStats;

const RECORDS_PER_SHARD: usize = 5;

/// `shards` shards, each subscribed at once; `h2_streams` streams per
/// HTTP/2 connection (below the shard count, subscriptions spread over
/// several connections).
async fn subscribe_all_shards(shards: i32, h2_streams: usize) -> Result<ConnectionStats> {
    assert_no_tokio();
    let (k, http) = tls_kinesis(h2_streams).await;
    with_stream(&k, "efo", shards, |stream, stream_arn| {
        subscribe_and_read(k.clone(), stream, stream_arn, shards)
    })
    .await?;
    assert_no_tokio();
    Ok(http.connection_stats())
}

async fn subscribe_and_read(
    k: aws_sdk_kinesis::Client,
    stream: String,
    stream_arn: String,
    shards: i32,
) -> Result<()> {
    // RECORDS_PER_SHARD records to each shard, aimed by explicit hash key.
    let listed = k
        .list_shards()
        .stream_name(&stream)
        .send()
        .await
        .context("ListShards")?;
    let mut entries = Vec::new();
    for shard in listed.shards() {
        let start = shard
            .hash_key_range()
            .context("no hash range")?
            .starting_hash_key();
        for i in 0..RECORDS_PER_SHARD {
            entries.push(
                PutRecordsRequestEntry::builder()
                    .data(Blob::new(format!("{}-{i}", shard.shard_id())))
                    .partition_key("ignored")
                    .explicit_hash_key(start)
                    .build()?,
            );
        }
    }
    let put = k
        .put_records()
        .stream_name(&stream)
        .set_records(Some(entries))
        .send()
        .await
        .context("PutRecords")?;
    ensure!(
        put.failed_record_count() == Some(0),
        "PutRecords failed some"
    );

    let consumer_arn = register_consumer(&k, &stream_arn, &unique("c")).await?;

    let mut subscriptions = Vec::new();
    for shard in listed.shards() {
        let k = k.clone();
        let consumer_arn = consumer_arn.clone();
        let shard_id = shard.shard_id().to_owned();
        subscriptions.push(async_std::task::spawn(async move {
            assert_no_tokio();
            let output = k
                .subscribe_to_shard()
                .consumer_arn(&consumer_arn)
                .shard_id(&shard_id)
                .starting_position(
                    StartingPosition::builder()
                        .r#type(ShardIteratorType::TrimHorizon)
                        .build()?,
                )
                .send()
                .await
                .with_context(|| format!("SubscribeToShard {shard_id}"))?;
            let mut events = output.event_stream;
            let mut records = Vec::new();
            while records.len() < RECORDS_PER_SHARD {
                match events
                    .recv()
                    .await
                    .with_context(|| format!("event stream of {shard_id}"))?
                {
                    Some(SubscribeToShardEventStream::SubscribeToShardEvent(event)) => {
                        records.extend(
                            event
                                .records()
                                .iter()
                                .map(|r| String::from_utf8_lossy(r.data().as_ref()).into_owned()),
                        );
                    }
                    Some(other) => bail!("unexpected event {other:?}"),
                    None => bail!("event stream of {shard_id} ended early"),
                }
            }
            let expected: Vec<String> = (0..RECORDS_PER_SHARD)
                .map(|i| format!("{shard_id}-{i}"))
                .collect();
            ensure!(records == expected, "{shard_id}: {records:?}");
            Ok(())
        }));
    }
    let count = subscriptions.len();
    within(Duration::from_secs(60), "all subscriptions", async {
        for subscription in subscriptions {
            subscription.await?;
        }
        Ok::<_, anyhow::Error>(())
    })
    .await??;
    ensure!(count == shards as usize);
    Ok(())
}

/// Register a consumer and wait until it is ACTIVE (the mock limits
/// control-plane calls in flight: LimitExceeded is retried).
async fn register_consumer(
    k: &aws_sdk_kinesis::Client,
    stream_arn: &str,
    name: &str,
) -> Result<String> {
    let deadline = Instant::now() + Duration::from_secs(20);
    let consumer_arn = loop {
        match k
            .register_stream_consumer()
            .stream_arn(stream_arn)
            .consumer_name(name)
            .send()
            .await
        {
            Ok(out) => {
                break out
                    .consumer()
                    .context("no consumer")?
                    .consumer_arn()
                    .to_owned()
            }
            Err(err)
                if err
                    .as_service_error()
                    .is_some_and(|e| e.is_limit_exceeded_exception())
                    && Instant::now() < deadline =>
            {
                async_io::Timer::after(Duration::from_millis(100)).await;
            }
            Err(err) => return Err(err).context("RegisterStreamConsumer"),
        }
    };
    loop {
        let described = k
            .describe_stream_consumer()
            .consumer_arn(&consumer_arn)
            .send()
            .await;
        match described {
            Ok(out) => {
                let status = out
                    .consumer_description()
                    .map(|d| d.consumer_status().clone());
                if status == Some(ConsumerStatus::Active) {
                    return Ok(consumer_arn);
                }
            }
            Err(err)
                if err
                    .as_service_error()
                    .is_some_and(|e| e.is_limit_exceeded_exception()) => {}
            Err(err) => return Err(err).context("DescribeStreamConsumer"),
        }
        if Instant::now() > deadline {
            bail!("consumer {name} not ACTIVE after 20 s");
        }
        async_io::Timer::after(Duration::from_millis(100)).await;
    }
}

#[test]
fn subscribe_to_several_shards_over_tls_h2_without_tokio() -> Result<()> {
    let stats = async_std::task::block_on(subscribe_all_shards(4, 100))?;
    // Every call (control plane, PutRecords, the four subscriptions) went
    // over HTTP/2; connections opened while the first was still being set
    // up may add one or two, never one per call.
    ensure!(stats.http1_opened == 0, "{stats:?}");
    ensure!((1..=3).contains(&stats.http2_opened), "{stats:?}");
    Ok(())
}

#[test]
fn subscriptions_spread_over_connections_past_the_stream_budget() -> Result<()> {
    // Two streams per connection, five subscriptions: at least three
    // HTTP/2 connections to one origin.
    let stats = async_std::task::block_on(subscribe_all_shards(5, 2))?;
    ensure!(stats.http1_opened == 0, "{stats:?}");
    ensure!(stats.http2_opened >= 3, "{stats:?}");
    Ok(())
}

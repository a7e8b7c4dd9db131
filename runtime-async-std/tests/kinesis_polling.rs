//! Kinesis control and polling calls through
//! [`kinesin_async_std::AsyncStdHttpClient`] against kinesis-mock over
//! plain HTTP/1.1, under `async_std::task::block_on` with no tokio runtime.

mod common;

use std::collections::BTreeSet;

use anyhow::{ensure, Context, Result};
use aws_sdk_kinesis::primitives::Blob;
use aws_sdk_kinesis::types::{PutRecordsRequestEntry, ShardIteratorType};
use common::{assert_no_tokio, plain_sdk, with_stream};

#[test]
fn kinesis_create_put_list_and_get_records_without_tokio() -> Result<()> {
    async_std::task::block_on(async {
        assert_no_tokio();
        let k = aws_sdk_kinesis::Client::new(&plain_sdk().await);
        with_stream(&k, "poll", 3, |stream, _arn| {
            read_all_shards(k.clone(), stream)
        })
        .await?;
        assert_no_tokio();
        Ok(())
    })
}

async fn read_all_shards(k: aws_sdk_kinesis::Client, stream: String) -> Result<()> {
    let sent: BTreeSet<String> = (0..30).map(|i| format!("record-{i}")).collect();
    let entries = sent
        .iter()
        .map(|data| {
            PutRecordsRequestEntry::builder()
                .data(Blob::new(data.as_bytes()))
                .partition_key(data)
                .build()
        })
        .collect::<Result<Vec<_>, _>>()?;
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

    let shards = k
        .list_shards()
        .stream_name(&stream)
        .send()
        .await
        .context("ListShards")?;
    ensure!(shards.shards().len() == 3, "{:?}", shards.shards());

    // Concurrent GetRecords on every shard: several HTTP/1.1
    // connections from the pool at once.
    let mut reads = Vec::new();
    for shard in shards.shards() {
        let k = k.clone();
        let stream = stream.clone();
        let shard_id = shard.shard_id().to_owned();
        reads.push(async_std::task::spawn(async move {
            assert_no_tokio();
            let iterator = k
                .get_shard_iterator()
                .stream_name(&stream)
                .shard_id(&shard_id)
                .shard_iterator_type(ShardIteratorType::TrimHorizon)
                .send()
                .await
                .context("GetShardIterator")?
                .shard_iterator
                .context("no iterator")?;
            let got = k
                .get_records()
                .shard_iterator(iterator)
                .send()
                .await
                .context("GetRecords")?;
            ensure!(got.next_shard_iterator().is_some(), "open shard ended");
            Ok::<_, anyhow::Error>(
                got.records()
                    .iter()
                    .map(|r| String::from_utf8_lossy(r.data().as_ref()).into_owned())
                    .collect::<Vec<_>>(),
            )
        }));
    }
    let mut received = BTreeSet::new();
    for read in reads {
        received.extend(read.await?);
    }
    ensure!(received == sent, "received {received:?}");
    Ok(())
}

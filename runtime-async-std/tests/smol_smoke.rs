//! The same crate under `smol::block_on`: async-io underneath, no
//! async-std executor driving the test, no tokio runtime.

mod common;

use std::time::Duration;

use anyhow::{ensure, Context, Result};
use aws_sdk_kinesis::primitives::Blob;
use aws_sdk_kinesis::types::ShardIteratorType;
use common::{assert_no_tokio, plain_sdk, with_stream};
use kinesin_async_std::AsyncStdRuntime;
use kinesin_aws::runtime::{sleep_until, Runtime};

#[test]
fn smol_block_on_runs_the_sdk_and_the_runtime() -> Result<()> {
    smol::block_on(async {
        assert_no_tokio();
        let runtime = AsyncStdRuntime;
        let start = runtime.now();
        sleep_until(&runtime, start + Duration::from_millis(10)).await;
        ensure!(runtime.now() >= start + Duration::from_millis(10));

        let k = aws_sdk_kinesis::Client::new(&plain_sdk().await);
        with_stream(&k, "smol", 1, |stream, _arn| {
            put_and_read_in_a_task(k.clone(), stream)
        })
        .await?;
        assert_no_tokio();
        Ok(())
    })
}

/// PutRecord here, GetRecords in a task spawned through the Runtime.
async fn put_and_read_in_a_task(k: aws_sdk_kinesis::Client, stream: String) -> Result<()> {
    let runtime = AsyncStdRuntime;
    k.put_record()
        .stream_name(&stream)
        .partition_key("p")
        .data(Blob::new("hello from smol"))
        .send()
        .await
        .context("PutRecord")?;

    let (tx, rx) = async_std::channel::bounded(1);
    let task_k = k.clone();
    runtime.spawn(Box::pin(async move {
        let result = async {
            let shard = task_k
                .list_shards()
                .stream_name(&stream)
                .send()
                .await?
                .shards()[0]
                .shard_id()
                .to_owned();
            let iterator = task_k
                .get_shard_iterator()
                .stream_name(&stream)
                .shard_id(shard)
                .shard_iterator_type(ShardIteratorType::TrimHorizon)
                .send()
                .await?
                .shard_iterator
                .context("no iterator")?;
            let got = task_k.get_records().shard_iterator(iterator).send().await?;
            Ok::<_, anyhow::Error>(
                got.records()
                    .iter()
                    .map(|r| r.data().as_ref().to_vec())
                    .collect::<Vec<_>>(),
            )
        }
        .await;
        let _ = tx.send(result).await;
    }));
    let records = common::within(Duration::from_secs(30), "GetRecords task", rx.recv())
        .await??
        .map_err(|e| e.context("GetRecords task"))?;
    ensure!(records == vec![b"hello from smol".to_vec()], "{records:?}");
    Ok(())
}

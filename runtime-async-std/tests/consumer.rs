//! The public Consumer on async-std against the emulators, under
//! `async_std::task::block_on` with no tokio runtime: polling with leases
//! in DynamoDB (dynalite), and Enhanced Fan-Out over TLS HTTP/2. The full
//! conformance suite (both runtimes) lives in the `tests` crate.

mod common;

use std::collections::BTreeSet;
use std::time::Duration;

use anyhow::{bail, ensure, Context, Result};
use aws_sdk_kinesis::primitives::Blob;
use aws_sdk_kinesis::types::PutRecordsRequestEntry;
use common::{assert_no_tokio, plain_sdk, tls_kinesis, unique, with_stream, within};
use futures_lite::StreamExt;
use kinesin_async_std::{Batches, Consumer};

/// Put `n` records `id=<i>` over 8 partition keys.
async fn put_numbered(k: &aws_sdk_kinesis::Client, stream: &str, n: u64) -> Result<()> {
    let entries = (0..n)
        .map(|i| {
            PutRecordsRequestEntry::builder()
                .partition_key(format!("pk{}", i % 8))
                .data(Blob::new(format!("id={i}")))
                .build()
        })
        .collect::<Result<Vec<_>, _>>()?;
    let out = k
        .put_records()
        .stream_name(stream)
        .set_records(Some(entries))
        .send()
        .await
        .context("PutRecords")?;
    ensure!(
        out.failed_record_count() == Some(0),
        "PutRecords failed some"
    );
    Ok(())
}

/// Take and ack batches until every id in `0..n` arrived.
async fn take_all(batches: &mut Batches, n: u64) -> Result<BTreeSet<u64>> {
    let mut seen = BTreeSet::new();
    while (seen.len() as u64) < n {
        let Some(batch) = batches.next().await else {
            bail!("batch stream ended with {} of {n}", seen.len());
        };
        let batch = batch?;
        for record in batch.records() {
            let text = std::str::from_utf8(record.data())?;
            let id = text
                .strip_prefix("id=")
                .and_then(|s| s.parse().ok())
                .with_context(|| format!("unexpected payload {text:?}"))?;
            seen.insert(id);
        }
        batch.ack();
    }
    Ok(seen)
}

#[test]
fn polling_consumer_with_dynamodb_leases_delivers_every_record() -> Result<()> {
    async_std::task::block_on(async {
        assert_no_tokio();
        let sdk = plain_sdk().await;
        let k = aws_sdk_kinesis::Client::new(&sdk);
        let put_k = k.clone();
        with_stream(&k, "cpoll", 2, |stream, _arn| async move {
            put_numbered(&put_k, &stream, 100).await?;
            let consumer = Consumer::builder()
                .stream(&stream)
                .polling()
                .lease_table(unique("leases"))
                .create_lease_table(true)
                .start_from_oldest()
                .build(&sdk)
                .await?;
            let mut batches = consumer.batches();
            let seen = within(
                Duration::from_secs(60),
                "100 records",
                take_all(&mut batches, 100),
            )
            .await??;
            ensure!(seen == (0..100).collect(), "{seen:?}");
            drop(batches);
            within(Duration::from_secs(30), "shutdown", consumer.shutdown()).await??;
            Ok(())
        })
        .await?;
        assert_no_tokio();
        Ok(())
    })
}

#[test]
fn efo_consumer_over_tls_h2_delivers_every_record() -> Result<()> {
    async_std::task::block_on(async {
        assert_no_tokio();
        let sdk = plain_sdk().await;
        let (tls_k, http) = tls_kinesis(100).await;
        let consumer_k = tls_k.clone();
        with_stream(&tls_k, "cefo", 3, |stream, _arn| async move {
            put_numbered(&consumer_k, &stream, 60).await?;
            let consumer = Consumer::builder()
                .stream(&stream)
                .enhanced_fan_out(unique("app"))
                .kinesis_client(consumer_k)
                .lease_table(unique("leases"))
                .create_lease_table(true)
                .start_from_oldest()
                .build(&sdk)
                .await?;
            let mut batches = consumer.batches();
            let seen = within(
                Duration::from_secs(60),
                "60 records",
                take_all(&mut batches, 60),
            )
            .await??;
            ensure!(seen == (0..60).collect(), "{seen:?}");
            drop(batches);
            within(Duration::from_secs(30), "shutdown", consumer.shutdown()).await??;
            Ok(())
        })
        .await?;
        let stats = http.connection_stats();
        ensure!(
            stats.http1_opened == 0 && stats.http2_opened >= 1,
            "{stats:?}"
        );
        assert_no_tokio();
        Ok(())
    })
}

//! Helpers shared by the end-to-end tests: the emulator environment, fresh
//! streams and tables, producing records, collecting batches.
#![allow(dead_code)]

use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{bail, ensure, Context, Result};
use aws_sdk_kinesis::primitives::Blob;
use aws_sdk_kinesis::types::{PutRecordsRequestEntry, StreamStatus};
use aws_types::SdkConfig;
use futures_lite::StreamExt;
use kinesin_core::ids::StreamId;
use kinesin_core::io::LeaseRow;
use kinesin_tokio::{Batches, Consumer, ConsumerBuilder};

/// The emulators' client configuration, or a panic telling how to start
/// them (these tests never skip).
pub async fn sdk() -> SdkConfig {
    for var in ["AWS_ENDPOINT_URL_KINESIS", "AWS_ENDPOINT_URL_DYNAMODB"] {
        if std::env::var_os(var).is_none() {
            panic!(
                "{var} is not set: the end-to-end tests need the local emulators. Run \
                 `scripts/emulators.sh start` and `eval \"$(scripts/emulators.sh env)\"`, then \
                 run the tests again from that shell."
            );
        }
    }
    aws_config::defaults(aws_config::BehaviorVersion::latest())
        .load()
        .await
}

pub fn kinesis(sdk: &SdkConfig) -> aws_sdk_kinesis::Client {
    aws_sdk_kinesis::Client::new(sdk)
}

/// A name no other test (or earlier run) used.
pub fn unique(prefix: &str) -> String {
    static N: AtomicU64 = AtomicU64::new(0);
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or(0);
    format!(
        "kt-{prefix}-{}-{nanos}-{}",
        std::process::id(),
        N.fetch_add(1, Ordering::Relaxed)
    )
}

/// Deletes its stream when dropped (the mock has a 500-shard limit for
/// all streams together). Needs the multi-thread tokio runtime.
pub struct StreamGuard {
    client: aws_sdk_kinesis::Client,
    name: String,
}

impl Drop for StreamGuard {
    fn drop(&mut self) {
        let delete = self
            .client
            .delete_stream()
            .stream_name(&self.name)
            .enforce_consumer_deletion(true)
            .send();
        let handle = tokio::runtime::Handle::current();
        // Best effort: a leftover stream only uses emulator capacity.
        let _ = tokio::task::block_in_place(|| handle.block_on(delete));
    }
}

/// Create a stream and wait until it is ACTIVE; returns its ARN and a
/// guard that deletes it at the end of the test.
pub async fn create_stream(
    k: &aws_sdk_kinesis::Client,
    name: &str,
    shards: i32,
) -> Result<(String, StreamGuard)> {
    let arn = create_stream_only(k, name, shards).await?;
    Ok((
        arn,
        StreamGuard {
            client: k.clone(),
            name: name.to_owned(),
        },
    ))
}

async fn create_stream_only(
    k: &aws_sdk_kinesis::Client,
    name: &str,
    shards: i32,
) -> Result<String> {
    k.create_stream()
        .stream_name(name)
        .shard_count(shards)
        .send()
        .await
        .with_context(|| format!("CreateStream {name}"))?;
    wait_active(k, name).await
}

pub async fn wait_active(k: &aws_sdk_kinesis::Client, name: &str) -> Result<String> {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let out = k.describe_stream_summary().stream_name(name).send().await?;
        let s = out.stream_description_summary.context("no summary")?;
        if s.stream_status == StreamStatus::Active {
            return Ok(s.stream_arn);
        }
        ensure!(
            Instant::now() < deadline,
            "stream {name} not ACTIVE after 30 s"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Put records `(partition key, data)`, in order per partition key.
pub async fn put(
    k: &aws_sdk_kinesis::Client,
    stream: &str,
    items: &[(String, Vec<u8>)],
) -> Result<()> {
    for chunk in items.chunks(200) {
        // One at a time per chunk keeps per-key order even with retries.
        let mut pending: Vec<&(String, Vec<u8>)> = chunk.iter().collect();
        for _attempt in 0..20 {
            let entries = pending
                .iter()
                .map(|(pk, data)| {
                    PutRecordsRequestEntry::builder()
                        .partition_key(pk)
                        .data(Blob::new(data.clone()))
                        .build()
                        .expect("entry")
                })
                .collect::<Vec<_>>();
            let out = k
                .put_records()
                .stream_name(stream)
                .set_records(Some(entries))
                .send()
                .await
                .with_context(|| format!("PutRecords {stream}"))?;
            if out.failed_record_count.unwrap_or(0) == 0 {
                pending.clear();
                break;
            }
            // Keep the failed ones (and everything after the first failure,
            // so order per key holds).
            let first_failed = out
                .records
                .iter()
                .position(|r| r.error_code.is_some())
                .unwrap_or(0);
            pending = pending.split_off(first_failed);
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        ensure!(pending.is_empty(), "PutRecords kept failing");
    }
    Ok(())
}

/// Records `id` in `ids`, payload `id=<n>`, partition key `pk<n % keys>`.
pub fn numbered(ids: std::ops::Range<u64>, keys: u64) -> Vec<(String, Vec<u8>)> {
    ids.map(|i| (format!("pk{}", i % keys), format!("id={i}").into_bytes()))
        .collect()
}

/// One delivered record, as the tests check it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Got {
    pub id: u64,
    pub shard: String,
    pub partition_key: String,
    pub sub: u32,
    pub token: u64,
}

pub fn id_of(data: &[u8]) -> u64 {
    std::str::from_utf8(data)
        .ok()
        .and_then(|s| s.strip_prefix("id="))
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("unexpected payload {data:?}"))
}

/// Take batches (acking each) until `want` distinct ids arrived or the
/// timeout passed (an error); returns every record in delivery order.
pub async fn take(batches: &mut Batches, want: usize, timeout: Duration) -> Result<Vec<Got>> {
    let (got, complete) = collect(batches, want, timeout).await?;
    if !complete {
        bail!(
            "timed out after {timeout:?} with {} of {want} distinct records",
            ids(&got).len()
        );
    }
    Ok(got)
}

/// Take whatever arrives (acking) for `period`.
pub async fn take_for(batches: &mut Batches, period: Duration) -> Result<Vec<Got>> {
    Ok(collect(batches, usize::MAX, period).await?.0)
}

/// Take batches (acking each) until `want` distinct ids or the timeout;
/// the flag says whether `want` was reached.
async fn collect(
    batches: &mut Batches,
    want: usize,
    timeout: Duration,
) -> Result<(Vec<Got>, bool)> {
    let deadline = tokio::time::Instant::now() + timeout;
    let mut got = Vec::new();
    let mut seen = BTreeSet::new();
    while seen.len() < want {
        let batch = match tokio::time::timeout_at(deadline, batches.next()).await {
            Err(_) => return Ok((got, false)),
            Ok(None) => bail!("batch stream ended with {} of {want}", seen.len()),
            Ok(Some(b)) => b?,
        };
        for r in batch.records() {
            let id = id_of(r.data());
            seen.insert(id);
            got.push(Got {
                id,
                shard: batch.shard().shard.to_string(),
                partition_key: r.partition_key().to_owned(),
                sub: r.sub_sequence_number(),
                token: batch.fencing_token(),
            });
        }
        batch.ack();
    }
    Ok((got, true))
}

/// Distinct ids, sorted.
pub fn ids(got: &[Got]) -> Vec<u64> {
    got.iter()
        .map(|g| g.id)
        .collect::<BTreeSet<_>>()
        .into_iter()
        .collect()
}

/// Per shard, the ids in first-delivery order must increase for each
/// partition key (Kinesis keeps order per shard).
pub fn assert_ordered_per_key(got: &[Got]) {
    let mut last: BTreeMap<(String, String), u64> = BTreeMap::new();
    let mut first_seen = BTreeSet::new();
    for g in got {
        if !first_seen.insert(g.id) {
            continue;
        }
        let key = (g.shard.clone(), g.partition_key.clone());
        if let Some(prev) = last.get(&key) {
            assert!(
                g.id > *prev,
                "out of order on {key:?}: {} after {prev}",
                g.id
            );
        }
        last.insert(key, g.id);
    }
}

/// A builder with test timings: failover 3 s, rebalance 2 s, shard sync
/// 2 s, commit 1 s, a fresh DynamoDB table created on demand.
pub fn builder(stream: &str, table: &str, worker: &str) -> ConsumerBuilder {
    Consumer::builder()
        .stream(stream)
        .lease_table(table)
        .create_lease_table(true)
        .worker_id(worker)
        .failover_time(Duration::from_secs(3))
        .rebalance_period(Duration::from_secs(2))
        .shard_sync_period(Duration::from_secs(2))
        .commit_period(Duration::from_secs(1))
        .shutdown_timeout(Duration::from_secs(5))
}

/// The lease rows of a stream in a table.
pub async fn leases(sdk: &SdkConfig, table: &str, stream_arn: &str) -> Result<Vec<LeaseRow>> {
    use kinesin_aws::LeaseStore;
    let store = kinesin_aws::DynamoLeaseStore::new(aws_sdk_dynamodb::Client::new(sdk), table);
    Ok(store.read_leases(&StreamId::new(stream_arn)).await?)
}

/// Leases held per worker id.
pub fn held_by_worker(rows: &[LeaseRow]) -> BTreeMap<String, usize> {
    let mut m = BTreeMap::new();
    for r in rows {
        if let Some(o) = &r.owner {
            *m.entry(o.worker.to_string()).or_insert(0) += 1;
        }
    }
    m
}

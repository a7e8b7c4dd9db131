//! `kinesin produce`: put N test records; each record's data starts with a
//! unique id `<run>-<n>` (then a space and padding up to --size), so the
//! consumers' outputs can be checked for loss and duplicates.
//!
//! Every call has the `--call-timeout` deadline (`deadline`): a
//! black-holed endpoint fails naming the call instead of hanging.

use std::process::ExitCode;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{bail, Context, Result};
use aws_sdk_kinesis::error::{ProvideErrorMetadata, SdkError};
use aws_sdk_kinesis::primitives::Blob;
use aws_sdk_kinesis::types::{PutRecordsRequestEntry, StreamStatus};
use kinesin_core::kpl::{aggregate, AggRecord};
use tracing::info;

use crate::deadline::within;
use crate::ProduceArgs;

/// PutRecords limits: 500 entries, 5 MiB per request.
const MAX_ENTRIES: usize = 500;
const MAX_REQUEST_BYTES: usize = 5 * 1024 * 1024 - 64 * 1024;

pub async fn run(args: ProduceArgs) -> Result<ExitCode> {
    let after = crate::deadline::from_secs(args.call_timeout)?;
    let sdk = crate::aws_config(None).await?;
    let k = aws_sdk_kinesis::Client::new(&sdk);
    if args.create {
        create_stream(&k, &args.stream, args.shards, after).await?;
    } else {
        wait_active(&k, &args.stream, false, after).await?;
    }
    let run_id = run_id();
    let started = Instant::now();
    let m = args.aggregate.unwrap_or(1);
    // Build the Kinesis records: (partition key, data, user records).
    let mut entries: Vec<(String, Vec<u8>, u64)> = Vec::new();
    let mut i = 0u64;
    let mut group = 0u64;
    while i < args.count {
        let key = format!("key-{}", group % args.keys);
        let n = m.min(args.count - i);
        if args.aggregate.is_some() {
            let datas: Vec<Vec<u8>> = (i..i + n).map(|j| payload(&run_id, j, args.size)).collect();
            let recs: Vec<AggRecord<'_>> = datas
                .iter()
                .map(|d| AggRecord {
                    partition_key: key.as_bytes(),
                    explicit_hash_key: None,
                    data: d,
                })
                .collect();
            let agg = aggregate(&recs);
            if agg.len() + key.len() > 1024 * 1024 {
                bail!(
                    "an aggregate of {m} records of {} bytes is over the 1 MiB Kinesis record \
                     limit: lower --aggregate or --size",
                    args.size
                );
            }
            entries.push((key, agg, n));
        } else {
            entries.push((key, payload(&run_id, i, args.size), 1));
        }
        i += n;
        group += 1;
    }
    let kinesis_records = entries.len();
    let mut calls = 0u64;
    let mut retried = 0u64;
    let mut start = 0;
    while start < entries.len() {
        let mut end = start;
        let mut bytes = 0;
        while end < entries.len() && end - start < MAX_ENTRIES {
            let b = entries[end].0.len() + entries[end].1.len();
            if end > start && bytes + b > MAX_REQUEST_BYTES {
                break;
            }
            bytes += b;
            end += 1;
        }
        let (c, r) = put_all(&k, &args.stream, &entries[start..end], after).await?;
        calls += c;
        retried += r;
        start = end;
    }
    let secs = started.elapsed().as_secs_f64();
    eprintln!(
        "produced {} records ({} Kinesis records{}) to {} in {:.1} s ({:.0} records/s); \
         {calls} PutRecords calls, {retried} entries retried; ids {run_id}-0..{run_id}-{}",
        args.count,
        kinesis_records,
        match args.aggregate {
            Some(m) => format!(", KPL aggregates of up to {m}"),
            None => String::new(),
        },
        args.stream,
        secs,
        args.count as f64 / secs.max(1e-3),
        args.count.saturating_sub(1),
    );
    Ok(ExitCode::SUCCESS)
}

/// `<run>-<n>` then a space and padding up to `size` bytes.
fn payload(run: &str, n: u64, size: usize) -> Vec<u8> {
    let mut v = format!("{run}-{n} ").into_bytes();
    while v.len() < size {
        v.push(b'a' + (v.len() % 26) as u8);
    }
    v
}

fn run_id() -> String {
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or(0);
    let mut n = (nanos / 1000) as u64 ^ u64::from(std::process::id()) << 40;
    let mut s = String::new();
    const DIGITS: &[u8] = b"0123456789abcdefghijklmnopqrstuvwxyz";
    while n > 0 {
        s.insert(0, DIGITS[(n % 36) as usize] as char);
        n /= 36;
    }
    s
}

/// Put one request's entries, retrying failed entries with backoff.
pub(crate) async fn put_all(
    k: &aws_sdk_kinesis::Client,
    stream: &str,
    items: &[(String, Vec<u8>, u64)],
    after: Duration,
) -> Result<(u64, u64)> {
    let mut pending: Vec<&(String, Vec<u8>, u64)> = items.iter().collect();
    let mut calls = 0;
    let mut retried = 0;
    let mut backoff = Duration::from_millis(100);
    for attempt in 0..30 {
        let entries = pending
            .iter()
            .map(|(pk, data, _)| {
                PutRecordsRequestEntry::builder()
                    .partition_key(pk)
                    .data(Blob::new(data.clone()))
                    .build()
                    .expect("partition key and data are set")
            })
            .collect::<Vec<_>>();
        let mut req = k.put_records().set_records(Some(entries));
        req = if stream.starts_with("arn:") {
            req.stream_arn(stream)
        } else {
            req.stream_name(stream)
        };
        calls += 1;
        match within(
            &format!("Kinesis PutRecords to {stream}"),
            after,
            req.send(),
        )
        .await?
        {
            Ok(out) if out.failed_record_count.unwrap_or(0) == 0 => return Ok((calls, retried)),
            Ok(out) => {
                let failed: Vec<_> = pending
                    .iter()
                    .zip(out.records())
                    .filter(|(_, r)| r.error_code().is_some())
                    .map(|(p, _)| *p)
                    .collect();
                retried += failed.len() as u64;
                pending = failed;
            }
            Err(e) if attempt < 29 && is_retryable(&e) => {
                retried += pending.len() as u64;
            }
            Err(e) => return Err(sdk_error(e, &format!("PutRecords to {stream}"))),
        }
        tokio::time::sleep(backoff).await;
        backoff = (backoff * 2).min(Duration::from_secs(2));
    }
    bail!("PutRecords to {stream}: records still failing after 30 attempts")
}

fn is_retryable<E: ProvideErrorMetadata>(
    e: &SdkError<E, aws_sdk_kinesis::config::http::HttpResponse>,
) -> bool {
    match e {
        SdkError::TimeoutError(_) | SdkError::DispatchFailure(_) | SdkError::ResponseError(_) => {
            true
        }
        SdkError::ServiceError(s) => matches!(
            s.err().code(),
            Some(
                "ProvisionedThroughputExceededException"
                    | "LimitExceededException"
                    | "InternalFailure"
                    | "ServiceUnavailable"
            )
        ),
        _ => false,
    }
}

/// An SDK error as one line: code and message, not the Debug dump.
pub fn sdk_error<E: ProvideErrorMetadata + std::error::Error + Send + Sync + 'static>(
    e: SdkError<E, aws_sdk_kinesis::config::http::HttpResponse>,
    what: &str,
) -> anyhow::Error {
    match &e {
        SdkError::ServiceError(s) => {
            let code = s.err().code().unwrap_or("error");
            let msg = s.err().message().unwrap_or("");
            anyhow::anyhow!("{what}: {code}: {msg}")
        }
        _ => anyhow::Error::new(e).context(what.to_owned()),
    }
}

async fn create_stream(
    k: &aws_sdk_kinesis::Client,
    name: &str,
    shards: u32,
    after: Duration,
) -> Result<()> {
    let shards = i32::try_from(shards).context("--shards is too large")?;
    let req = k.create_stream().stream_name(name).shard_count(shards);
    match within("Kinesis CreateStream", after, req.send()).await? {
        Ok(_) => info!("creating stream {name} with {shards} shards"),
        Err(SdkError::ServiceError(s)) if s.err().is_resource_in_use_exception() => {
            info!("stream {name} exists already");
        }
        Err(e) => return Err(sdk_error(e, &format!("CreateStream {name}"))),
    }
    wait_active(k, name, true, after).await.map(|_| ())
}

/// Wait until the stream is ACTIVE; returns its ARN.
pub async fn wait_active(
    k: &aws_sdk_kinesis::Client,
    name: &str,
    creating: bool,
    after: Duration,
) -> Result<String> {
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let mut req = k.describe_stream_summary();
        req = if name.starts_with("arn:") {
            req.stream_arn(name)
        } else {
            req.stream_name(name)
        };
        match within("Kinesis DescribeStreamSummary", after, req.send()).await? {
            Ok(out) => {
                let s = out
                    .stream_description_summary
                    .context("DescribeStreamSummary returned no summary")?;
                if s.stream_status == StreamStatus::Active {
                    return Ok(s.stream_arn);
                }
            }
            Err(SdkError::ServiceError(s))
                if s.err().is_resource_not_found_exception() && !creating =>
            {
                bail!(
                    "stream {name} does not exist: create it (kinesin produce --create --shards K)"
                )
            }
            Err(e) => return Err(sdk_error(e, &format!("DescribeStreamSummary {name}"))),
        }
        if Instant::now() > deadline {
            bail!("stream {name} is not ACTIVE after 120 s");
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

//! The memory run of `scripts/bench.sh`: a sink that takes every batch and
//! never acknowledges one, so everything received stays pending in the
//! consumer's pool. Memory must stay bounded by the pool budget
//! (`max_pending_bytes`), whatever the shard count and the data waiting in
//! the stream.
//!
//! ```text
//! cargo run --release -p kinesin-cli --example stalled_sink -- \
//!     --stream NAME --efo CONSUMER --budget-mib 64 --seconds 60 --local-store DIR [--ack]
//! ```
//!
//! `--ack`: acknowledge every batch at once instead (reads never stop, so
//! the reads in flight, not the held batches, are what the budget bounds).
//!
//! Prints every 5 s, and at the end, the records and bytes it holds
//! unacknowledged (the pool's use, counted as the pool counts: data plus
//! partition key) and the leases held; exits without a graceful shutdown
//! (held batches cannot be acknowledged). Endpoints, region and credentials
//! come from the standard AWS environment.

use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use futures_lite::StreamExt;
use kinesin_tokio::{Batch, Consumer};

struct Args {
    stream: String,
    efo: Option<String>,
    budget_mib: u64,
    seconds: u64,
    local_store: String,
    ack: bool,
}

fn parse_args() -> Result<Args> {
    let (mut stream, mut efo, mut budget_mib, mut seconds, mut local_store, mut ack) =
        (None, None, 64, 60, None, false);
    let mut it = std::env::args().skip(1);
    while let Some(a) = it.next() {
        let mut val = || it.next().with_context(|| format!("{a} needs a value"));
        match a.as_str() {
            "--stream" => stream = Some(val()?),
            "--efo" => efo = Some(val()?),
            "--budget-mib" => budget_mib = val()?.parse().context("--budget-mib: a number")?,
            "--seconds" => seconds = val()?.parse().context("--seconds: a number")?,
            "--local-store" => local_store = Some(val()?),
            "--ack" => ack = true,
            other => bail!("unknown argument {other}"),
        }
    }
    Ok(Args {
        stream: stream.context("--stream NAME is required")?,
        efo,
        budget_mib,
        seconds,
        local_store: local_store.context("--local-store DIR is required")?,
        ack,
    })
}

#[tokio::main]
async fn main() -> Result<()> {
    let args = parse_args()?;
    // kinesin's own logs on stderr (RUST_LOG; default: the driver at info).
    let _ = tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| {
                tracing_subscriber::EnvFilter::new("warn,aws_config=error,kinesin_aws=info")
            }),
        )
        .try_init();
    let sdk = aws_config::defaults(aws_config::BehaviorVersion::latest())
        .load()
        .await;
    let mut b = Consumer::builder()
        .stream(&args.stream)
        .local_store(&args.local_store)
        .worker_id("stalled-sink")
        .max_pending_bytes(args.budget_mib * 1024 * 1024)
        .max_pending_records(10_000_000);
    b = match &args.efo {
        Some(name) => b.enhanced_fan_out(name),
        None => b.polling(),
    };
    let consumer = b.build(&sdk).await?;
    let mut batches = consumer.batches();
    let started = Instant::now();
    let end = started + Duration::from_secs(args.seconds);
    let mut held: Vec<Batch> = Vec::new();
    let (mut records, mut bytes, mut max_bytes) = (0u64, 0u64, 0u64);
    // --ack: the shards read from (nothing is held).
    let mut shards_read = std::collections::BTreeSet::new();
    let mut report = tokio::time::interval(Duration::from_secs(5));
    report.tick().await;
    let show = |records: u64, bytes: u64, shards: usize| {
        eprintln!(
            "stalled_sink: {:5.1} s: {} {records} records, {:.1} MiB, from {shards} shards (budget {} MiB)",
            started.elapsed().as_secs_f64(),
            if args.ack { "acked" } else { "holding unacknowledged" },
            bytes as f64 / (1024.0 * 1024.0),
            args.budget_mib
        );
    };
    let shards = |held: &[Batch]| {
        let mut s: Vec<&str> = held.iter().map(|b| b.shard().shard.as_str()).collect();
        s.sort_unstable();
        s.dedup();
        s.len()
    };
    loop {
        tokio::select! {
            b = batches.next() => {
                let batch = match b {
                    Some(b) => b?,
                    None => bail!("the consumer stopped"),
                };
                records += batch.records().len() as u64;
                bytes += batch
                    .records()
                    .iter()
                    .map(|r| (r.data().len() + r.partition_key().len()) as u64)
                    .sum::<u64>();
                max_bytes = max_bytes.max(bytes);
                if args.ack {
                    // Counted as taken, not held.
                    shards_read.insert(batch.shard().shard.to_string());
                    batch.ack();
                } else {
                    held.push(batch); // never acknowledged
                }
            }
            _ = report.tick() => show(records, bytes, if args.ack { shards_read.len() } else { shards(&held) }),
            _ = tokio::time::sleep_until(end.into()) => break,
        }
    }
    let shards_seen = if args.ack {
        shards_read.len()
    } else {
        shards(&held)
    };
    show(records, bytes, shards_seen);
    if args.ack {
        println!(
            "{{\"acked_records\": {records}, \"acked_mib\": {:.1}, \"shards\": {shards_seen}}}",
            bytes as f64 / (1024.0 * 1024.0)
        );
    } else {
        println!(
            "{{\"held_records\": {records}, \"held_mib\": {:.1}, \"max_held_mib\": {:.1}, \"shards\": {shards_seen}}}",
            bytes as f64 / (1024.0 * 1024.0),
            max_bytes as f64 / (1024.0 * 1024.0),
        );
    }
    // Held batches cannot be acknowledged: stop without a graceful shutdown.
    std::process::exit(0);
}

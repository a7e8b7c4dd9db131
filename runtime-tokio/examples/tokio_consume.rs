//! Consume a Kinesis stream with kinesin on tokio: every record to stdout
//! as `shard sequence partition-key data`, acked once written; a per-shard
//! "sink" opened and closed on lease events (with the fencing token a real
//! sink would check its writes against); the metrics registry rendered at
//! the end; a graceful shutdown (final checkpoints, leases released).
//!
//! ```sh
//! # AWS credentials and region from the environment, or the local
//! # emulators: scripts/emulators.sh start && eval "$(scripts/emulators.sh env)"
//! cargo run -p kinesin-tokio --example tokio_consume -- STREAM LEASE_TABLE [MAX_RECORDS]
//! ```

use std::collections::BTreeMap;
use std::io::Write as _;

use futures_lite::StreamExt;
use kinesin_tokio::{Consumer, LeaseEvent};

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error + Send + Sync>> {
    let mut args = std::env::args().skip(1);
    let (Some(stream), Some(table)) = (args.next(), args.next()) else {
        return Err("usage: tokio_consume STREAM LEASE_TABLE [MAX_RECORDS]".into());
    };
    let max: u64 = match args.next() {
        Some(n) => n.parse().map_err(|e| format!("MAX_RECORDS {n:?}: {e}"))?,
        None => u64::MAX,
    };

    let sdk = aws_config::load_defaults(aws_config::BehaviorVersion::latest()).await;
    let consumer = Consumer::builder()
        .stream(&stream)
        .lease_table(&table)
        .create_lease_table(true)
        .build(&sdk)
        .await?;

    // Lease events: open a sink per shard on gain, close it on loss.
    let mut events = consumer.lease_events();
    let sinks = tokio::spawn(async move {
        let mut open: BTreeMap<String, u64> = BTreeMap::new();
        while let Some(event) = events.next().await {
            match event {
                LeaseEvent::Gained {
                    shard,
                    token,
                    start,
                } => {
                    eprintln!("open {shard} (token {token}) from {start:?}");
                    open.insert(shard.to_string(), token);
                }
                LeaseEvent::Lost {
                    shard,
                    token,
                    reason,
                } => {
                    eprintln!("close {shard} (token {token}): {reason:?}");
                    open.remove(&shard.to_string());
                }
                LeaseEvent::ShardEnded { shard } => eprintln!("{shard} read to its end"),
            }
        }
        open
    });

    let mut batches = consumer.batches();
    let mut out = std::io::stdout().lock();
    let mut seen = 0u64;
    while seen < max {
        let Some(batch) = batches.next().await else {
            break;
        };
        let batch = batch?;
        for r in batch.records() {
            writeln!(
                out,
                "{} {} {} {}",
                batch.shard(),
                r.sequence_number(),
                r.partition_key(),
                String::from_utf8_lossy(r.data())
            )?;
        }
        out.flush()?;
        seen += batch.records().len() as u64;
        batch.ack();
    }
    drop(batches);

    let mut text = String::new();
    consumer.metrics().render(&mut text);
    eprint!("{text}");
    consumer.shutdown().await?;
    let still_open = sinks.await?;
    eprintln!("{seen} records; sinks open after shutdown: {still_open:?}");
    Ok(())
}

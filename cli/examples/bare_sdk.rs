//! The baseline of `scripts/bench.sh`: a bare aws-sdk-kinesis consumer with
//! no leases, no checkpoints, no flow control and no KPL de-aggregation,
//! writing the same JSON Lines as `kinesin consume` (with fencing token 0).
//!
//! ```text
//! cargo run --release -p kinesin-cli --example bare_sdk -- \
//!     --stream NAME --mode polling|efo [--consumer NAME] --expect N
//! ```
//!
//! Reads every shard of the stream from TRIM_HORIZON, one task per shard
//! (GetRecords in a loop, or SubscribeToShard re-subscribed from the
//! continuation sequence number), sends the records to one writer, and exits
//! once `--expect` records were written. Endpoints, region and credentials
//! come from the standard AWS environment (`eval "$(scripts/emulators.sh env)"`).
//!
//! It is what a user would write by hand for a one-off read: the point of the
//! comparison is the CPU kinesin spends on top of the same SDK calls. The
//! shard readers are those of the counting baseline
//! (`common/counting.rs`, [`counting::read_shards`]); only what is done
//! with the records differs.

use std::io::{BufWriter, Write};
use std::sync::Arc;
use std::time::Instant;

use anyhow::{bail, Result};
use aws_sdk_kinesis::types::Record;
use base64::Engine;
use serde::Serialize;
use tokio::sync::mpsc;

#[path = "common/counting.rs"]
mod counting;

#[derive(Serialize)]
struct Line<'a> {
    stream: &'a str,
    shard: &'a str,
    sequence: &'a str,
    sub_sequence: u32,
    partition_key: &'a str,
    data: &'a str,
    arrival_ms: u64,
    fencing_token: u64,
}

type Batch = (String, Vec<Record>);

/// The shard readers hand each response to the writer.
#[derive(Clone)]
struct ToWriter(mpsc::Sender<Batch>);

impl counting::Sink for ToWriter {
    fn take(
        &self,
        shard: &str,
        records: Vec<Record>,
    ) -> impl std::future::Future<Output = bool> + Send {
        let batch = (shard.to_owned(), records);
        async move { self.0.send(batch).await.is_ok() }
    }
}

#[tokio::main]
async fn main() -> Result<()> {
    let args = counting::parse_args()?;
    let sdk = aws_config::defaults(aws_config::BehaviorVersion::latest())
        .load()
        .await;
    let started = Instant::now();
    let rt = Arc::new(kinesin_tokio::TokioRuntime::default());
    let (tx, mut rx) = mpsc::channel::<Batch>(64);
    let shards = counting::read_shards(rt, &sdk, &args, ToWriter(tx)).await?;

    let stdout = std::io::stdout();
    let mut out = BufWriter::with_capacity(1 << 16, stdout.lock());
    let mut b64 = String::new();
    let mut written: u64 = 0;
    while written < args.expect {
        let Some((shard, records)) = rx.recv().await else {
            bail!("every shard reader stopped after {written} records");
        };
        for r in &records {
            b64.clear();
            base64::engine::general_purpose::STANDARD.encode_string(r.data.as_ref(), &mut b64);
            let line = Line {
                stream: &args.stream,
                shard: &shard,
                sequence: &r.sequence_number,
                sub_sequence: 0,
                partition_key: r.partition_key.as_deref().unwrap_or_default(),
                data: &b64,
                arrival_ms: r
                    .approximate_arrival_timestamp
                    .and_then(|t| t.to_millis().ok())
                    .and_then(|ms| u64::try_from(ms).ok())
                    .unwrap_or(0),
                fencing_token: 0,
            };
            serde_json::to_writer(&mut out, &line)?;
            out.write_all(b"\n")?;
        }
        out.flush()?;
        written += records.len() as u64;
    }
    eprintln!(
        "bare_sdk: {written} records from {shards} shards in {:.2} s ({})",
        started.elapsed().as_secs_f64(),
        if args.efo { "efo" } else { "polling" }
    );
    // The shard tasks would read on forever.
    std::process::exit(0);
}

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
//! comparison is the CPU kinesin spends on top of the same SDK calls.

use std::io::{BufWriter, Write};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use aws_sdk_kinesis::types::{
    ConsumerStatus, Record, ShardIteratorType, StartingPosition, SubscribeToShardEventStream,
};
use aws_sdk_kinesis::Client;
use base64::Engine;
use serde::Serialize;
use tokio::sync::mpsc;

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

struct Args {
    stream: String,
    efo: bool,
    consumer: String,
    expect: u64,
}

fn parse_args() -> Result<Args> {
    let mut stream = None;
    let mut mode = "polling".to_owned();
    let mut consumer = "kinesin-bench-bare".to_owned();
    let mut expect = None;
    let mut it = std::env::args().skip(1);
    while let Some(a) = it.next() {
        let mut val = || it.next().with_context(|| format!("{a} needs a value"));
        match a.as_str() {
            "--stream" => stream = Some(val()?),
            "--mode" => mode = val()?,
            "--consumer" => consumer = val()?,
            "--expect" => expect = Some(val()?.parse().context("--expect: a number")?),
            other => bail!("unknown argument {other}"),
        }
    }
    let efo = match mode.as_str() {
        "polling" => false,
        "efo" => true,
        m => bail!("--mode {m}: polling or efo"),
    };
    Ok(Args {
        stream: stream.context("--stream NAME is required")?,
        efo,
        consumer,
        expect: expect.context("--expect N is required")?,
    })
}

type Batch = (String, Vec<Record>);

#[tokio::main]
async fn main() -> Result<()> {
    let args = parse_args()?;
    let sdk = aws_config::defaults(aws_config::BehaviorVersion::latest())
        .load()
        .await;
    let client = Client::new(&sdk);
    let started = Instant::now();

    let desc = client
        .describe_stream_summary()
        .stream_name(&args.stream)
        .send()
        .await
        .context("DescribeStreamSummary")?;
    let stream_arn = desc
        .stream_description_summary
        .context("no stream summary")?
        .stream_arn;
    let shards = list_shards(&client, &stream_arn).await?;

    let (tx, mut rx) = mpsc::channel::<Batch>(64);
    if args.efo {
        let consumer_arn = register(&client, &stream_arn, &args.consumer).await?;
        for shard in &shards {
            tokio::spawn(subscribe_loop(
                client.clone(),
                consumer_arn.clone(),
                shard.clone(),
                tx.clone(),
            ));
        }
    } else {
        for shard in &shards {
            tokio::spawn(poll_loop(
                client.clone(),
                stream_arn.clone(),
                shard.clone(),
                tx.clone(),
            ));
        }
    }
    drop(tx);

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
        "bare_sdk: {written} records from {} shards in {:.2} s ({})",
        shards.len(),
        started.elapsed().as_secs_f64(),
        if args.efo { "efo" } else { "polling" }
    );
    // The shard tasks would read on forever.
    std::process::exit(0);
}

async fn list_shards(client: &Client, stream_arn: &str) -> Result<Vec<String>> {
    let mut shards = Vec::new();
    let mut token: Option<String> = None;
    loop {
        let req = client.list_shards();
        let req = match &token {
            Some(t) => req.next_token(t),
            None => req.stream_arn(stream_arn),
        };
        let out = req.send().await.context("ListShards")?;
        shards.extend(
            out.shards
                .unwrap_or_default()
                .into_iter()
                .map(|s| s.shard_id),
        );
        match out.next_token {
            Some(t) => token = Some(t),
            None => return Ok(shards),
        }
    }
}

async fn register(client: &Client, stream_arn: &str, name: &str) -> Result<String> {
    let arn = match client
        .register_stream_consumer()
        .stream_arn(stream_arn)
        .consumer_name(name)
        .send()
        .await
    {
        Ok(out) => out.consumer.context("no Consumer")?.consumer_arn,
        Err(_) => {
            // It exists already (ResourceInUse): describe it.
            client
                .describe_stream_consumer()
                .stream_arn(stream_arn)
                .consumer_name(name)
                .send()
                .await
                .context("DescribeStreamConsumer")?
                .consumer_description
                .context("no ConsumerDescription")?
                .consumer_arn
        }
    };
    for _ in 0..120 {
        let d = client
            .describe_stream_consumer()
            .consumer_arn(&arn)
            .send()
            .await
            .context("DescribeStreamConsumer")?
            .consumer_description
            .context("no ConsumerDescription")?;
        if d.consumer_status == ConsumerStatus::Active {
            return Ok(arn);
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
    bail!("consumer {name} not ACTIVE after 2 minutes")
}

async fn poll_loop(client: Client, stream_arn: String, shard: String, tx: mpsc::Sender<Batch>) {
    let mut iterator = loop {
        match client
            .get_shard_iterator()
            .stream_arn(&stream_arn)
            .shard_id(&shard)
            .shard_iterator_type(ShardIteratorType::TrimHorizon)
            .send()
            .await
        {
            Ok(out) => break out.shard_iterator,
            Err(e) => {
                eprintln!("bare_sdk: GetShardIterator {shard}: {e}");
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
        }
    };
    while let Some(it) = iterator.take() {
        match client
            .get_records()
            .stream_arn(&stream_arn)
            .shard_iterator(&it)
            .limit(10_000)
            .send()
            .await
        {
            Ok(out) => {
                let caught_up = out.records.is_empty() && out.millis_behind_latest == Some(0);
                if !out.records.is_empty() && tx.send((shard.clone(), out.records)).await.is_err() {
                    return;
                }
                iterator = out.next_shard_iterator;
                // The service allows 5 GetRecords per second and shard.
                let pause = if caught_up { 1000 } else { 200 };
                tokio::time::sleep(Duration::from_millis(pause)).await;
            }
            Err(e) => {
                eprintln!("bare_sdk: GetRecords {shard}: {e}");
                iterator = Some(it);
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
        }
    }
}

async fn subscribe_loop(
    client: Client,
    consumer_arn: String,
    shard: String,
    tx: mpsc::Sender<Batch>,
) {
    let mut after: Option<String> = None;
    loop {
        let start = match &after {
            Some(seq) => StartingPosition::builder()
                .r#type(ShardIteratorType::AfterSequenceNumber)
                .sequence_number(seq),
            None => StartingPosition::builder().r#type(ShardIteratorType::TrimHorizon),
        };
        let sub = client
            .subscribe_to_shard()
            .consumer_arn(&consumer_arn)
            .shard_id(&shard)
            .starting_position(start.build().expect("type is set"))
            .send()
            .await;
        let mut events = match sub {
            Ok(out) => out.event_stream,
            Err(e) => {
                eprintln!("bare_sdk: SubscribeToShard {shard}: {e}");
                tokio::time::sleep(Duration::from_secs(5)).await;
                continue;
            }
        };
        loop {
            match events.recv().await {
                Ok(Some(SubscribeToShardEventStream::SubscribeToShardEvent(ev))) => {
                    if !ev.continuation_sequence_number.is_empty() {
                        after = Some(ev.continuation_sequence_number.clone());
                    }
                    if !ev.records.is_empty() && tx.send((shard.clone(), ev.records)).await.is_err()
                    {
                        return;
                    }
                }
                Ok(Some(_)) => {}
                Ok(None) => break,
                Err(e) => {
                    eprintln!("bare_sdk: SubscribeToShard {shard} event: {e}");
                    break;
                }
            }
        }
        // At most one SubscribeToShard per second and shard.
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
}

//! The two sides of `scripts/bench.sh library`, written once for both
//! runtimes (included by path into `cli/examples/{count_sink,bare_count}.rs`
//! on tokio and `runtime-async-std/examples/{count_sink,bare_count}_async_std.rs` on
//! async-std), and the shard readers of every bare loop (also
//! `cli/examples/bare_sdk.rs`, the baseline of `scripts/bench.sh throughput`,
//! which hands what they read to its JSON Lines writer):
//!
//! - [`library`]: a consumer built on kinesin's public API, as the README's
//!   quick start builds it (`Consumer::builder()`, a local store), whose
//!   sink counts the records of each batch and acks it;
//! - [`bare`]: a bare aws-sdk-kinesis loop making the same Kinesis calls
//!   (ListShards, then GetShardIterator and GetRecords per shard for
//!   polling; RegisterStreamConsumer and SubscribeToShard per shard for
//!   EFO) that counts the records of each response in the task that read
//!   them: no leases, no checkpoints, no flow control, no KPL
//!   de-aggregation, no second task.
//!
//! Both count the same way ([`Tally`]): each record of `kinesin produce`
//! starts with `<run>-<n> `, and `n` sets one bit, so a run ends once every
//! one of the `--expect` records was seen (duplicates do not count twice),
//! and prints `records=<distinct> deliveries=<total>` on stdout for the
//! benchmark to check. Neither writes anything per record.
//!
//! Arguments: `--stream NAME --mode polling|efo [--consumer NAME]
//! --expect N [--batching defaults|one] [--local-store DIR]` (the last two
//! only for the library side). Endpoints, region and credentials come from
//! the standard AWS environment (`eval "$(scripts/emulators.sh env)"`).

// Each example uses one side of this module.
#![allow(dead_code)]

use std::future::Future;
use std::path::PathBuf;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll, Waker};
use std::time::{Duration, Instant};

use anyhow::{bail, Context as _, Result};
use aws_sdk_kinesis::types::{
    ConsumerStatus, ShardIteratorType, StartingPosition, SubscribeToShardEventStream,
};
use aws_sdk_kinesis::Client;
use futures_lite::StreamExt;
use kinesin_aws::runtime::sleep_until;
use kinesin_aws::{Batching, Runtime};

/// The command line of either side.
pub struct Args {
    pub stream: String,
    pub efo: bool,
    pub consumer: String,
    pub expect: u64,
    /// One record per batch (`Batching::bento()`) instead of the defaults.
    pub one_record: bool,
    pub local_store: Option<PathBuf>,
}

pub fn parse_args() -> Result<Args> {
    let mut stream = None;
    let mut mode = "polling".to_owned();
    let mut consumer = "kinesin-bench-count".to_owned();
    let mut expect = None;
    let mut one_record = false;
    let mut local_store = None;
    let mut it = std::env::args().skip(1);
    while let Some(a) = it.next() {
        let mut val = || it.next().with_context(|| format!("{a} needs a value"));
        match a.as_str() {
            "--stream" => stream = Some(val()?),
            "--mode" => mode = val()?,
            "--consumer" => consumer = val()?,
            "--expect" => expect = Some(val()?.parse().context("--expect: a number")?),
            "--batching" => {
                one_record = match val()?.as_str() {
                    "defaults" => false,
                    "one" => true,
                    b => bail!("--batching {b}: defaults or one"),
                }
            }
            "--local-store" => local_store = Some(PathBuf::from(val()?)),
            other => bail!("unknown argument {other}"),
        }
    }
    let efo = match mode.as_str() {
        "polling" => false,
        "efo" => true,
        m => bail!("--mode {m}: polling or efo"),
    };
    let expect: u64 = expect.context("--expect N is required")?;
    if expect == 0 {
        bail!("--expect must be at least 1");
    }
    Ok(Args {
        stream: stream.context("--stream NAME is required")?,
        efo,
        consumer,
        expect,
        one_record,
        local_store,
    })
}

/// Which of the expected records were seen, and how many deliveries.
pub struct Tally {
    seen: Vec<u64>,
    expect: u64,
    pub distinct: u64,
    pub total: u64,
}

impl Tally {
    pub fn new(expect: u64) -> Self {
        Tally {
            seen: vec![0; expect.div_ceil(64) as usize],
            expect,
            distinct: 0,
            total: 0,
        }
    }

    /// Count one record: `<run>-<n> ...` sets bit `n`. A record of another
    /// shape (or `n` out of range) is counted as a delivery only.
    pub fn add(&mut self, data: &[u8]) {
        self.total += 1;
        let Some(dash) = data.iter().position(|&b| b == b'-') else {
            return;
        };
        let mut n: u64 = 0;
        for &b in &data[dash + 1..] {
            match b {
                b'0'..=b'9' => n = n * 10 + u64::from(b - b'0'),
                _ => break,
            }
        }
        if n >= self.expect {
            return;
        }
        let (word, bit) = ((n / 64) as usize, 1u64 << (n % 64));
        if self.seen[word] & bit == 0 {
            self.seen[word] |= bit;
            self.distinct += 1;
        }
    }

    pub fn complete(&self) -> bool {
        self.distinct == self.expect
    }

    /// The line the benchmark checks.
    pub fn summary(&self) -> String {
        format!("records={} deliveries={}", self.distinct, self.total)
    }
}

/// The library side: a consumer with its defaults (or one-record batches)
/// and a sink that counts and acks each batch; shuts down gracefully once
/// every expected record was seen.
pub async fn library<R: Runtime + Default>(
    sdk: &aws_config::SdkConfig,
    args: &Args,
) -> Result<Tally> {
    let started = Instant::now();
    let mut builder = kinesin_aws::Consumer::<R>::builder()
        .stream(&args.stream)
        .worker_id("bench")
        .local_store(
            args.local_store
                .clone()
                .context("--local-store DIR is required")?,
        );
    builder = if args.efo {
        builder.enhanced_fan_out(&args.consumer)
    } else {
        builder.polling()
    };
    if args.one_record {
        builder = builder.batching(Batching::bento());
    }
    let consumer = builder.build(sdk).await?;
    let mut tally = Tally::new(args.expect);
    let mut batches = consumer.batches();
    let mut count = 0u64;
    while !tally.complete() {
        let Some(batch) = batches.next().await else {
            bail!("the batch stream ended after {} records", tally.distinct);
        };
        let batch = batch?;
        for r in batch.records() {
            tally.add(r.data());
        }
        count += 1;
        batch.ack();
    }
    drop(batches);
    consumer.shutdown().await?;
    eprintln!(
        "count_sink: {} in {count} batches in {:.2} s ({}, {})",
        tally.summary(),
        started.elapsed().as_secs_f64(),
        if args.efo { "efo" } else { "polling" },
        if args.one_record {
            "one-record batches"
        } else {
            "defaults"
        },
    );
    Ok(tally)
}

/// Where the shard tasks of a bare loop put what each read brought.
pub trait Sink: Clone + Send + Sync + 'static {
    /// Takes one response's records (never empty) of `shard`; false stops
    /// the shard's task.
    fn take(
        &self,
        shard: &str,
        records: Vec<aws_sdk_kinesis::types::Record>,
    ) -> impl Future<Output = bool> + Send;
}

/// What the shard tasks of the bare loop share: the tally, and the waker
/// of `bare` waiting for it to complete.
struct Shared {
    tally: Mutex<Tally>,
    done: AtomicBool,
    waiter: Mutex<Option<Waker>>,
}

impl Shared {
    fn add(&self, data: impl Iterator<Item = impl AsRef<[u8]>>) {
        let mut t = self.tally.lock().expect("not poisoned");
        for d in data {
            t.add(d.as_ref());
        }
        if t.complete() && !self.done.swap(true, Ordering::AcqRel) {
            if let Some(w) = self.waiter.lock().expect("not poisoned").take() {
                w.wake();
            }
        }
    }
}

impl Sink for Arc<Shared> {
    fn take(
        &self,
        _shard: &str,
        records: Vec<aws_sdk_kinesis::types::Record>,
    ) -> impl Future<Output = bool> + Send {
        // Counted in the task that read them.
        self.add(records.iter().map(|r| r.data.as_ref()));
        std::future::ready(true)
    }
}

struct Done(Arc<Shared>);

impl Future for Done {
    type Output = ();
    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        *self.0.waiter.lock().expect("not poisoned") = Some(cx.waker().clone());
        if self.0.done.load(Ordering::Acquire) {
            Poll::Ready(())
        } else {
            Poll::Pending
        }
    }
}

/// The bare side: every shard read from TRIM_HORIZON by its own task on
/// `rt`, counting what each response brought; returns once every expected
/// record was seen (the shard tasks are left running: exit the process).
pub async fn bare(rt: Arc<dyn Runtime>, sdk: &aws_config::SdkConfig, args: &Args) -> Result<Tally> {
    let started = Instant::now();
    let shared = Arc::new(Shared {
        tally: Mutex::new(Tally::new(args.expect)),
        done: AtomicBool::new(false),
        waiter: Mutex::new(None),
    });
    let shards = read_shards(rt, sdk, args, shared.clone()).await?;
    Done(shared.clone()).await;
    let tally = std::mem::replace(
        &mut *shared.tally.lock().expect("not poisoned"),
        Tally::new(1),
    );
    eprintln!(
        "bare_count: {} from {shards} shards in {:.2} s ({})",
        tally.summary(),
        started.elapsed().as_secs_f64(),
        if args.efo { "efo" } else { "polling" }
    );
    Ok(tally)
}

/// Start reading every shard of `args.stream` from TRIM_HORIZON, one task
/// per shard on `rt` (GetRecords in a loop, or SubscribeToShard
/// re-subscribed from the continuation sequence number), each handing what
/// a read brought to `sink`. Returns the number of shards.
pub async fn read_shards<S: Sink>(
    rt: Arc<dyn Runtime>,
    sdk: &aws_config::SdkConfig,
    args: &Args,
    sink: S,
) -> Result<usize> {
    let client = Client::new(sdk);
    let stream_arn = client
        .describe_stream_summary()
        .stream_name(&args.stream)
        .send()
        .await
        .context("DescribeStreamSummary")?
        .stream_description_summary
        .context("no stream summary")?
        .stream_arn;
    let shards = list_shards(&client, &stream_arn).await?;
    if args.efo {
        let consumer_arn = register(&*rt, &client, &stream_arn, &args.consumer).await?;
        for shard in &shards {
            rt.spawn(Box::pin(subscribe_loop(
                rt.clone(),
                client.clone(),
                consumer_arn.clone(),
                shard.clone(),
                sink.clone(),
            )));
        }
    } else {
        for shard in &shards {
            rt.spawn(Box::pin(poll_loop(
                rt.clone(),
                client.clone(),
                stream_arn.clone(),
                shard.clone(),
                sink.clone(),
            )));
        }
    }
    Ok(shards.len())
}

async fn sleep(rt: &dyn Runtime, d: Duration) {
    sleep_until(rt, rt.now() + d).await
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

async fn register(
    rt: &dyn Runtime,
    client: &Client,
    stream_arn: &str,
    name: &str,
) -> Result<String> {
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
        sleep(rt, Duration::from_secs(1)).await;
    }
    bail!("consumer {name} not ACTIVE after 2 minutes")
}

async fn poll_loop<S: Sink>(
    rt: Arc<dyn Runtime>,
    client: Client,
    stream_arn: String,
    shard: String,
    sink: S,
) {
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
                eprintln!("bare: GetShardIterator {shard}: {e}");
                sleep(&*rt, Duration::from_secs(1)).await;
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
                if !out.records.is_empty() && !sink.take(&shard, out.records).await {
                    return;
                }
                iterator = out.next_shard_iterator;
                // The service allows 5 GetRecords per second and shard.
                let pause = if caught_up { 1000 } else { 200 };
                sleep(&*rt, Duration::from_millis(pause)).await;
            }
            Err(e) => {
                eprintln!("bare: GetRecords {shard}: {e}");
                iterator = Some(it);
                sleep(&*rt, Duration::from_secs(1)).await;
            }
        }
    }
}

async fn subscribe_loop<S: Sink>(
    rt: Arc<dyn Runtime>,
    client: Client,
    consumer_arn: String,
    shard: String,
    sink: S,
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
                eprintln!("bare: SubscribeToShard {shard}: {e}");
                sleep(&*rt, Duration::from_secs(5)).await;
                continue;
            }
        };
        loop {
            match events.recv().await {
                Ok(Some(SubscribeToShardEventStream::SubscribeToShardEvent(ev))) => {
                    if !ev.continuation_sequence_number.is_empty() {
                        after = Some(ev.continuation_sequence_number.clone());
                    }
                    if !ev.records.is_empty() && !sink.take(&shard, ev.records).await {
                        return;
                    }
                }
                Ok(Some(_)) => {}
                Ok(None) => break,
                Err(e) => {
                    eprintln!("bare: SubscribeToShard {shard} event: {e}");
                    break;
                }
            }
        }
        // At most one SubscribeToShard per second and shard.
        sleep(&*rt, Duration::from_secs(1)).await;
    }
}

//! `kinesin consume`: JSON Lines on stdout, one object per user record.
//!
//! Delivery rule: a batch is acknowledged only after its lines were flushed
//! to stdout, so a checkpoint never covers a record that was not written
//! (a `kill -9` repeats records, it never loses one). Batches are written
//! into one buffer while more are ready at once, then flushed and acked
//! together.

use std::collections::HashMap;
use std::io::{BufWriter, IsTerminal, Write};
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Result;
use base64::Engine;
use futures_lite::StreamExt;
use kinesin_tokio::{Batch, Batching, Consumer, Record};
use serde::Serialize;
use tracing::{info, warn};

use crate::config::{self, Settings, Start, UsageError};
use crate::exec::Verdict;
use crate::ConsumeArgs;

/// Batches written before a flush and their acks, at most.
const MAX_UNFLUSHED_BATCHES: usize = 256;
/// How often `--exit-when-idle` looks whether reading has started.
const IDLE_START_CHECK: Duration = Duration::from_millis(250);
/// Default batch size of the CLI (the library's default is 1, as Bento).
const CLI_BATCH_COUNT: u32 = 500;
/// Redelivery backoff of a batch nacked by `--exec`, doubled per nack up
/// to the max: Bento's `auto_replay_nacks` backoff.
const DEFAULT_REDELIVERY_BACKOFF: Duration = Duration::from_millis(100);
const DEFAULT_REDELIVERY_BACKOFF_MAX: Duration = Duration::from_secs(5);

/// One output line: a user record as JSON.
#[derive(Serialize)]
pub(crate) struct Line<'a> {
    pub stream: &'a str,
    pub shard: &'a str,
    pub sequence: &'a str,
    pub sub_sequence: u32,
    pub partition_key: &'a str,
    pub data: &'a str,
    pub arrival_ms: u64,
    pub fencing_token: u64,
}

impl<'a> Line<'a> {
    /// The line of `r`, its data already base64-encoded in `data`.
    pub(crate) fn new(
        stream: &'a str,
        shard: &'a str,
        r: &'a Record,
        data: &'a str,
        fencing_token: u64,
    ) -> Self {
        Line {
            stream,
            shard,
            sequence: r.sequence_number().as_str(),
            sub_sequence: r.sub_sequence_number(),
            partition_key: r.partition_key(),
            data,
            arrival_ms: r.arrival_unix_ms(),
            fencing_token,
        }
    }
}

/// Standard base64 of a record's data.
pub(crate) fn base64(data: &[u8]) -> String {
    base64::engine::general_purpose::STANDARD.encode(data)
}

#[derive(Debug)]
enum Stop {
    MaxRecords,
    Idle,
    Signal(&'static str),
    StdoutClosed,
}

pub async fn run(args: ConsumeArgs) -> Result<ExitCode> {
    let settings = match &args.config {
        Some(path) => config::load(path)?,
        None => Settings::default(),
    };
    for w in &settings.warnings {
        warn!("config: {w}");
    }
    // --stream replaces the config's streams (and its explicit shards).
    let (streams, explicit) = if args.streams.is_empty() {
        (settings.streams.clone(), settings.explicit_shards.clone())
    } else {
        (args.streams.clone(), Vec::new())
    };
    if streams.is_empty() {
        return Err(UsageError(
            "no stream to consume: give --stream NAME (repeatable) or `streams` in --config".into(),
        )
        .into());
    }
    let idle = match args.exit_when_idle {
        Some(s) if !(s.is_finite() && s > 0.0) => {
            return Err(UsageError(format!(
                "invalid value '{s}' for '--exit-when-idle <SECS>': must be a positive number of seconds"
            ))
            .into())
        }
        Some(s) => Some(Duration::from_secs_f64(s)),
        None => None,
    };
    let lease_table = args.lease_table.clone().or_else(|| {
        if args.local_store.is_some() {
            None
        } else {
            settings.table.clone()
        }
    });
    if args.create_table && lease_table.is_none() {
        return Err(UsageError(
            "--create-table needs a DynamoDB lease table (--lease-table TABLE or dynamodb.table)"
                .into(),
        )
        .into());
    }

    let metrics_listener = match &args.metrics_addr {
        Some(addr) => Some(crate::stats::bind(addr).await?),
        None => None,
    };
    let sdk = crate::session::aws_config(&settings.session).await?;

    let mut b = Consumer::builder();
    for s in &streams {
        b = b.stream(s);
    }
    b = match (&args.efo, &settings.efo_name, &settings.efo_arn) {
        (Some(name), _, _) => b.enhanced_fan_out(name),
        (None, Some(name), _) => b.enhanced_fan_out(name),
        (None, None, Some(arn)) => b.enhanced_fan_out_arn(arn),
        (None, None, None) => b.polling(),
    };
    let store_desc;
    b = match &lease_table {
        Some(table) => {
            store_desc = format!("DynamoDB table {table}");
            let b = b
                .lease_table(table)
                .create_lease_table(args.create_table || settings.create_table);
            match settings.table_capacity {
                Some(c) => b.lease_table_capacity(c.read, c.write),
                None => b,
            }
        }
        None => {
            let dir = args
                .local_store
                .clone()
                .unwrap_or_else(|| PathBuf::from("./.kinesin-state"));
            store_desc = format!("local store {}", dir.display());
            b.local_store(dir)
        }
    };
    if let Some(id) = &args.worker_id {
        b = b.worker_id(id);
    }
    b = match args.start.clone().or(settings.start.clone()) {
        Some(Start::Oldest) | None => b.start_from_oldest(),
        Some(Start::Latest) => b.start_from_latest(),
        Some(Start::At(t)) => b.start_at(t),
    };
    if let Some(v) = settings.checkpoint_limit {
        b = b.checkpoint_limit(v);
    }
    if let Some(v) = settings.commit_period {
        b = b.commit_period(v);
    }
    if let Some(v) = settings.rebalance_period {
        b = b.rebalance_period(v);
    }
    if let Some(v) = settings.lease_period {
        b = b.failover_time(v);
    }
    if let Some(v) = settings.max_pending_records {
        b = b.max_pending_records(v);
    }
    if let Some(v) = settings.max_pending_bytes {
        b = b.max_pending_bytes(v);
    }
    if let Some(v) = settings.shard_sync_period {
        b = b.shard_sync_period(v);
    }
    if let Some(v) = settings.shutdown_timeout {
        b = b.shutdown_timeout(v);
    }
    if let Some(p) = settings.poll_period {
        b = b.configure(move |c| {
            if let kinesin_core::config::Retrieval::Polling { min_interval, .. } = &mut c.retrieval
            {
                *min_interval = (*min_interval).max(p);
            }
        });
    }
    if let Some(t) = settings.efo_activation_timeout {
        b = b.configure(move |c| c.consumer_active_timeout = t);
    }
    if let Some(dynamo) = &settings.dynamodb_session {
        // The lease table's own session: its fields, the input's for the rest.
        let session = config::Session {
            region: dynamo.region.clone().or(settings.session.region.clone()),
            endpoint: dynamo
                .endpoint
                .clone()
                .or(settings.session.endpoint.clone()),
            credentials: if dynamo.credentials == config::Credentials::default() {
                settings.session.credentials.clone()
            } else {
                dynamo.credentials.clone()
            },
        };
        let dynamo_sdk = crate::session::aws_config(&session).await?;
        b = b.dynamodb_client(aws_sdk_dynamodb::Client::new(&dynamo_sdk));
    }
    b = b.batching(settings.batching.unwrap_or(Batching {
        count: CLI_BATCH_COUNT,
        ..Batching::default()
    }));

    for (stream, shard) in &explicit {
        b = b.explicit_shard(stream, shard);
    }

    // Poison records (--exec is the CLI's one source of nacks).
    let exec = args
        .exec
        .as_deref()
        .map(|line| crate::exec::Exec::new(line, args.exec_timeout));
    if exec.is_some() {
        match args.max_deliveries {
            Some(n) => {
                if !settings.auto_replay_nacks {
                    warn!(
                        "config: auto_replay_nacks: false is overridden by --max-deliveries {n} \
                         (batches nacked {n} times go to --dead-letter, not dropped)"
                    );
                }
                b = b.max_deliveries(n);
            }
            None if !settings.auto_replay_nacks => b = b.auto_replay_nacks(false),
            None => {}
        }
        if settings.auto_replay_nacks || args.max_deliveries.is_some() {
            let first = args
                .redelivery_backoff
                .unwrap_or(DEFAULT_REDELIVERY_BACKOFF);
            let cap = args
                .redelivery_backoff_max
                .unwrap_or(DEFAULT_REDELIVERY_BACKOFF_MAX)
                .max(first);
            b = b.redelivery_backoff(first, cap);
        }
    } else if !settings.auto_replay_nacks {
        warn!(
            "config: auto_replay_nacks: false has no effect without --exec: printing to stdout, \
             kinesin nacks a batch only when it could not write it, and then stops (the next run \
             reads it again)"
        );
    }
    let dead_letter_writer = match &args.dead_letter {
        Some(t) => Some(crate::deadletter::Writer::open(
            t,
            &sdk,
            crate::deadline::from_secs(args.call_timeout)?,
        )?),
        None => None,
    };

    let consumer = b.build(&sdk).await?;
    // The progress line, the logs and --metrics-addr read one registry.
    let stats = crate::stats::Stats(consumer.metrics().clone());
    let metrics_server =
        metrics_listener.map(|l| tokio::spawn(crate::stats::serve(l, consumer.metrics().clone())));
    let mode = match (&args.efo, &settings.efo_name, &settings.efo_arn) {
        (None, None, None) => "polling".to_owned(),
        (Some(n), _, _) | (None, Some(n), _) => format!("Enhanced Fan-Out consumer {n}"),
        (None, None, Some(a)) => format!("Enhanced Fan-Out consumer {a}"),
    };
    info!(
        "consuming {} with {mode}, leases in {store_desc}",
        streams.join(", ")
    );

    let mut names = StreamNames::new(&streams);
    let dead_letter_task = dead_letter_writer.map(|w| {
        tokio::spawn(crate::deadletter::run(
            w,
            consumer.dead_letters(),
            names.clone(),
        ))
    });
    let stdout = std::io::stdout();
    let mut out = BufWriter::with_capacity(1 << 16, stdout.lock());
    let mut signals = crate::signals::Signals::install()?;
    let progress_on = std::io::stderr().is_terminal();
    let mut progress = Progress::new();
    // On a terminal a progress line every second (off a terminal, the
    // progress log task below).
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
    // --exit-when-idle counts from the first held shard (or first batch),
    // not from launch: registering an EFO consumer and taking leases can
    // take longer than a small idle value.
    let mut wait = Wait {
        idle,
        last_record: None,
        tick,
        progress_on,
    };

    let started = Instant::now();
    let mut delivered: u64 = 0;
    // Off a terminal, a log line every 10 s from its own task, so that it
    // goes on while writing to stdout blocks (a stalled sink).
    let shared_delivered = Arc::new(AtomicU64::new(0));
    let progress_log = (!progress_on).then(|| {
        let delivered = shared_delivered.clone();
        let stats = stats.clone();
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(Duration::from_secs(10));
            tick.tick().await;
            loop {
                tick.tick().await;
                let (pool_records, pool_bytes) = stats.pool();
                info!(
                    "progress: {} records, {} leases held, pool {pool_records} records / {:.1} MiB, {} lease-table writes",
                    delivered.load(Ordering::Relaxed),
                    stats.leases_held(),
                    pool_bytes as f64 / (1024.0 * 1024.0),
                    stats.lease_writes()
                );
            }
        })
    });
    let mut shards_seen: HashMap<String, ()> = HashMap::new();
    let mut b64 = String::new();
    let mut unflushed: Vec<Batch> = Vec::new();
    let mut batches = consumer.batches();

    let mut input: Vec<u8> = Vec::new();
    let outcome: Result<Stop> = if let Some(exec) = &exec {
        loop {
            let next = match wait
                .next(&mut batches, &mut signals, &mut progress, delivered, &stats)
                .await
            {
                Next::Batch(b) => b,
                Next::Stop(stop) => break Ok(stop),
            };
            let batch = match next {
                None => break Err(anyhow::anyhow!("the consumer stopped unexpectedly")),
                Some(Err(e)) => break Err(e.into()),
                Some(Ok(batch)) => batch,
            };
            wait.last_record = Some(Instant::now());
            let n = batch.records().len() as u64;
            let shard = batch.shard().shard.as_str().to_owned();
            let stream = names.display(batch.shard().stream.as_str()).to_owned();
            shards_seen.entry(shard.clone()).or_insert(());
            progress.lag(&shard, batch.millis_behind_latest());
            input.clear();
            for r in batch.records() {
                b64.clear();
                base64::engine::general_purpose::STANDARD.encode_string(r.data(), &mut b64);
                serde_json::to_writer(
                    &mut input,
                    &Line::new(&stream, &shard, r, &b64, batch.fencing_token()),
                )?;
                input.push(b'\n');
            }
            let env = crate::exec::BatchEnv {
                stream: &stream,
                shard: &shard,
                fencing_token: batch.fencing_token(),
                records: batch.records().len(),
                redelivery: batch.is_redelivery(),
            };
            // A first signal lets the running command finish (its batch is
            // acked or nacked as it says); a second one kills it (nack).
            let mut signalled = None;
            let verdict = {
                let run = exec.run(&input, &env);
                tokio::pin!(run);
                loop {
                    tokio::select! {
                        v = &mut run => break v,
                        s = signals.recv() => {
                            if signalled.is_some() {
                                break Ok(Verdict::Nack(format!("killed on a second signal ({s})")));
                            }
                            info!("{s}: waiting for the running --exec command (a second signal kills it)");
                            signalled = Some(s);
                        }
                    }
                }
            };
            match verdict {
                Ok(Verdict::Ack) => {
                    batch.ack();
                    delivered += n;
                    shared_delivered.store(delivered, Ordering::Relaxed);
                }
                Ok(Verdict::Nack(why)) => {
                    let range = match (batch.records().first(), batch.records().last()) {
                        (Some(a), Some(z)) => format!(
                            " {}/{}..{}/{}",
                            a.sequence_number().as_str(),
                            a.sub_sequence_number(),
                            z.sequence_number().as_str(),
                            z.sub_sequence_number()
                        ),
                        _ => String::new(),
                    };
                    warn!("--exec: {why}: {n} records of {stream} {shard}{range} nacked");
                    batch.nack();
                }
                Err(e) => {
                    drop(batch);
                    break Err(e);
                }
            }
            if let Some(s) = signalled {
                break Ok(Stop::Signal(s));
            }
            if args.max_records.is_some_and(|max| delivered >= max) {
                break Ok(Stop::MaxRecords);
            }
        }
    } else {
        loop {
            let first = match wait
                .next(&mut batches, &mut signals, &mut progress, delivered, &stats)
                .await
            {
                Next::Batch(b) => b,
                Next::Stop(stop) => break Ok(stop),
            };
            let mut next = first;
            let mut stop = None;
            let mut ended = false;
            // Write every batch that is ready now, then flush once and ack.
            loop {
                let batch = match next {
                    None => {
                        ended = true;
                        break;
                    }
                    Some(Err(e)) => {
                        let _ = out.flush();
                        return finish_err(consumer, batches, e.into()).await;
                    }
                    Some(Ok(batch)) => batch,
                };
                let n = batch.records().len() as u64;
                if n > 0 || wait.last_record.is_none() {
                    wait.last_record = Some(Instant::now());
                }
                let take = match args.max_records {
                    Some(max) => n.min(max.saturating_sub(delivered)),
                    None => n,
                };
                let shard = batch.shard();
                let stream = names.display(shard.stream.as_str()).to_owned();
                if !shards_seen.contains_key(shard.shard.as_str()) {
                    shards_seen.insert(shard.shard.as_str().to_owned(), ());
                }
                progress.lag(shard.shard.as_str(), batch.millis_behind_latest());
                let token = batch.fencing_token();
                let mut write_err = None;
                for r in &batch.records()[..take as usize] {
                    b64.clear();
                    base64::engine::general_purpose::STANDARD.encode_string(r.data(), &mut b64);
                    let line = Line::new(&stream, shard.shard.as_str(), r, &b64, token);
                    if let Err(e) = serde_json::to_writer(&mut out, &line)
                        .map_err(std::io::Error::from)
                        .and_then(|()| out.write_all(b"\n"))
                    {
                        write_err = Some(e);
                        break;
                    }
                }
                if let Some(e) = write_err {
                    drop(batch); // nack: not written
                    stop = Some(stdout_error(e));
                    break;
                }
                delivered += take;
                shared_delivered.store(delivered, Ordering::Relaxed);
                if take < n {
                    // Partly written: nack, so the rest is delivered again later.
                    drop(batch);
                    stop = Some(Ok(Stop::MaxRecords));
                    break;
                }
                unflushed.push(batch);
                if args.max_records.is_some_and(|max| delivered >= max) {
                    stop = Some(Ok(Stop::MaxRecords));
                    break;
                }
                if unflushed.len() >= MAX_UNFLUSHED_BATCHES {
                    break;
                }
                next = match futures_lite::future::poll_once(batches.next()).await {
                    Some(n) => n,
                    None => break,
                };
            }
            match out.flush() {
                Ok(()) => {
                    for b in unflushed.drain(..) {
                        b.ack();
                    }
                }
                Err(e) => {
                    unflushed.clear(); // nack
                    break stdout_error(e);
                }
            }
            if let Some(stop) = stop {
                break stop;
            }
            if ended {
                return finish_err(
                    consumer,
                    batches,
                    anyhow::anyhow!("the consumer stopped unexpectedly"),
                )
                .await;
            }
        }
    };
    if progress_on {
        progress.show(delivered, stats.leases_held());
        eprintln!();
    }
    if let Some(task) = progress_log {
        task.abort();
    }
    if let Some(task) = metrics_server {
        task.abort();
    }
    let stop = match outcome {
        Ok(stop) => stop,
        Err(e) => return finish_err(consumer, batches, e).await,
    };
    drop(out);
    info!(
        "stopping ({}): final checkpoints, then leases released",
        stop_text(&stop)
    );
    drop(batches);
    // A second signal during shutdown stops at once.
    tokio::select! {
        r = consumer.shutdown() => r?,
        _ = signals.recv() => { eprintln!("kinesin: second signal: stopped without releasing leases"); return Ok(ExitCode::from(130)); }
    }
    if let Some(task) = dead_letter_task {
        // The dead-letter stream ends once the consumer has shut down.
        match tokio::time::timeout(Duration::from_secs(15), task).await {
            Ok(Ok(stored)) if stored > 0 => {
                info!("{stored} dead letters stored");
            }
            Ok(_) => {}
            Err(_) => warn!("the dead-letter writer did not finish within 15 s"),
        }
    }
    let secs = started.elapsed().as_secs_f64();
    info!(
        "consumed {delivered} records from {} shards in {secs:.1} s; {} lease-table writes",
        shards_seen.len(),
        stats.lease_writes()
    );
    Ok(ExitCode::SUCCESS)
}

/// What the main loop waits on between batches: the next batch, a
/// signal, `--exit-when-idle`, and (on a terminal) the progress line.
struct Wait {
    idle: Option<Duration>,
    /// When the last batch came, or the first lease was held.
    last_record: Option<Instant>,
    tick: tokio::time::Interval,
    progress_on: bool,
}

/// What [`Wait::next`] gives the loop.
enum Next<T> {
    /// The stream's next item (`None`: it ended).
    Batch(Option<T>),
    Stop(Stop),
}

impl Wait {
    async fn next<S: futures_lite::Stream + Unpin>(
        &mut self,
        batches: &mut S,
        signals: &mut crate::signals::Signals,
        progress: &mut Progress,
        delivered: u64,
        stats: &crate::stats::Stats,
    ) -> Next<S::Item> {
        loop {
            if self.last_record.is_none() && stats.leases_held() > 0 {
                self.last_record = Some(Instant::now());
            }
            let idle_at = match (self.idle, self.last_record) {
                (Some(d), Some(from)) => Some(from + d),
                // Not reading yet: look again shortly.
                (Some(_), None) => Some(Instant::now() + IDLE_START_CHECK),
                (None, _) => None,
            };
            tokio::select! {
                b = batches.next() => return Next::Batch(b),
                s = signals.recv() => return Next::Stop(Stop::Signal(s)),
                _ = sleep_until(idle_at) => {
                    if self.last_record.is_some() {
                        return Next::Stop(Stop::Idle);
                    }
                }
                _ = self.tick.tick(), if self.progress_on => {
                    progress.show(delivered, stats.leases_held());
                }
            }
        }
    }
}

fn stop_text(stop: &Stop) -> &'static str {
    match stop {
        Stop::MaxRecords => "--max-records reached",
        Stop::Idle => "--exit-when-idle: no new record",
        Stop::Signal(s) => s,
        Stop::StdoutClosed => "stdout closed",
    }
}

fn stdout_error(e: std::io::Error) -> Result<Stop> {
    if e.kind() == std::io::ErrorKind::BrokenPipe {
        Ok(Stop::StdoutClosed)
    } else {
        Err(anyhow::Error::new(e).context("writing to stdout"))
    }
}

async fn finish_err(
    consumer: Consumer,
    batches: kinesin_tokio::Batches,
    e: anyhow::Error,
) -> Result<ExitCode> {
    drop(batches);
    let _ = tokio::time::timeout(Duration::from_secs(15), consumer.shutdown()).await;
    Err(e)
}

async fn sleep_until(at: Option<Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at.into()).await,
        None => std::future::pending().await,
    }
}

/// Prints streams as configured (a name stays a name) although the
/// consumer works on ARNs.
#[derive(Clone)]
pub(crate) struct StreamNames {
    configured: Vec<String>,
    cache: HashMap<String, String>,
}

impl StreamNames {
    fn new(configured: &[String]) -> Self {
        StreamNames {
            configured: configured.to_vec(),
            cache: HashMap::new(),
        }
    }

    pub(crate) fn display(&mut self, arn: &str) -> &str {
        if !self.cache.contains_key(arn) {
            let name = arn.rsplit_once(":stream/").map(|(_, n)| n).unwrap_or(arn);
            let shown = self
                .configured
                .iter()
                .find(|c| c.as_str() == arn || c.as_str() == name)
                .cloned()
                .unwrap_or_else(|| arn.to_owned());
            self.cache.insert(arn.to_owned(), shown);
        }
        &self.cache[arn]
    }
}

/// The progress line on a terminal.
struct Progress {
    last_at: Instant,
    last_count: u64,
    lags: HashMap<String, (u64, Instant)>,
}

impl Progress {
    fn new() -> Self {
        Progress {
            last_at: Instant::now(),
            last_count: 0,
            lags: HashMap::new(),
        }
    }

    fn lag(&mut self, shard: &str, ms: u64) {
        match self.lags.get_mut(shard) {
            Some(v) => *v = (ms, Instant::now()),
            None => {
                self.lags.insert(shard.to_owned(), (ms, Instant::now()));
            }
        }
    }

    fn show(&mut self, count: u64, held: u64) {
        let now = Instant::now();
        let dt = now.duration_since(self.last_at).as_secs_f64().max(1e-3);
        let rate = (count - self.last_count) as f64 / dt;
        self.last_at = now;
        self.last_count = count;
        self.lags
            .retain(|_, (_, at)| now.duration_since(*at) < Duration::from_secs(30));
        let lag = self.lags.values().map(|(ms, _)| *ms).max().unwrap_or(0);
        eprint!(
            "\r\x1b[2K{count} records  {rate:.0} rec/s  {held} shards held  lag {}",
            fmt_ms(lag)
        );
    }
}

fn fmt_ms(ms: u64) -> String {
    if ms < 1000 {
        format!("{ms} ms")
    } else {
        format!("{:.1} s", ms as f64 / 1000.0)
    }
}

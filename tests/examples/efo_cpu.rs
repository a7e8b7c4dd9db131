//! CPU time per million records of the same Enhanced Fan-Out run on either
//! runtime, against the emulators:
//!
//! ```text
//! scripts/emulators.sh start && eval "$(scripts/emulators.sh env)"
//! cargo run -p kinesin-tests --release --example efo_cpu -- --runtime tokio --records 20000
//! cargo run -p kinesin-tests --release --example efo_cpu -- --runtime async-std --records 20000
//! ```
//!
//! Options: `--runtime tokio|async-std` (required), `--records N` (20000),
//! `--shards S` (10), `--passes P` (5), `--tls` (the consumer's Kinesis
//! calls, subscriptions included, over TLS with ALPN h2 instead of plain
//! HTTP), `--batch B` (records per batch, 500).
//!
//! The records are written once (not measured); then each of the `P`
//! passes reads all of them with a fresh consumer (a new EFO consumer name
//! and lease table, from the oldest record), and this process's user +
//! system CPU time (from /proc/self/stat, every thread: the executor, the
//! HTTP client, the consumer) is measured from the consumer's build until
//! every record was delivered and acked. Several passes over the same
//! records make the 10 ms tick of the CPU clock small beside the total
//! without writing more (the mock is slow to fill). The mock caps throughput, so the
//! figure to compare is CPU per record, not records per second. The same
//! helpers as the conformance suite run the same scenario on each runtime
//! (the async-std run creates no tokio runtime).

#[path = "../tests/common/mod.rs"]
mod common;

use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use common::*;
use kinesin_core::config::Batching;

struct Args {
    runtime: String,
    records: u64,
    shards: i32,
    tls: bool,
    batch: u32,
    passes: u32,
}

fn parse_args() -> Result<Args> {
    let mut args = Args {
        runtime: String::new(),
        records: 20_000,
        shards: 10,
        tls: false,
        batch: 500,
        passes: 5,
    };
    let mut it = std::env::args().skip(1);
    while let Some(arg) = it.next() {
        let mut value = |name: &str| it.next().with_context(|| format!("{name} needs a value"));
        match arg.as_str() {
            "--runtime" => args.runtime = value("--runtime")?,
            "--records" => args.records = value("--records")?.parse()?,
            "--shards" => args.shards = value("--shards")?.parse()?,
            "--batch" => args.batch = value("--batch")?.parse()?,
            "--passes" => args.passes = value("--passes")?.parse()?,
            "--tls" => args.tls = true,
            other => bail!(
                "unknown argument {other:?}; usage: efo_cpu --runtime tokio|async-std \
                 [--records N] [--shards S] [--passes P] [--batch B] [--tls]"
            ),
        }
    }
    Ok(args)
}

fn main() -> Result<()> {
    let args = parse_args()?;
    // Half an hour at most, whatever the size asked for.
    let limit = Duration::from_secs(1800);
    match args.runtime.as_str() {
        "tokio" => run_within::<Tokio>(limit, async |env| measure(env, &args).await),
        "async-std" => run_within::<AsyncStd>(limit, async |env| measure(env, &args).await),
        other => bail!("--runtime must be tokio or async-std, not {other:?}"),
    }
}

/// This process's user + system CPU time so far.
fn cpu_time() -> Result<Duration> {
    let stat = std::fs::read_to_string("/proc/self/stat").context("/proc/self/stat")?;
    // Fields after the command name (which may hold spaces) start at 3.
    let rest = stat.rsplit_once(')').context("stat format")?.1;
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let ticks: u64 = fields[11].parse::<u64>()? + fields[12].parse::<u64>()?;
    // USER_HZ is 100 on Linux.
    Ok(Duration::from_millis(ticks * 10))
}

async fn measure<R: TestRuntime>(env: &Env<R>, args: &Args) -> Result<()> {
    let n = args.records;
    let (stream, _arn) = env.create_stream("cpu", args.shards).await?;
    let put_start = Instant::now();
    env.put(&stream, &numbered(0..n, 1000)).await?;
    eprintln!("put {n} records in {:?}", put_start.elapsed());
    let kinesis = if args.tls {
        env.tls_kinesis()?
    } else {
        env.k.clone()
    };
    let transport = if args.tls { "TLS h2" } else { "plain HTTP" };
    let (mut cpu, mut wall) = (Duration::ZERO, Duration::ZERO);
    for pass in 1..=args.passes {
        let (pass_cpu, pass_wall) = read_all(env, &stream, kinesis.clone(), args).await?;
        eprintln!(
            "pass {pass}: {n} records in {pass_wall:.1?} wall, {pass_cpu:.2?} CPU = {:.2} \
             CPU-seconds per million records",
            pass_cpu.as_secs_f64() * 1e6 / n as f64
        );
        cpu += pass_cpu;
        wall += pass_wall;
    }
    let total = n * u64::from(args.passes);
    println!(
        "{runtime} EFO over {transport}: {passes} x {n} records on {shards} shards, {total} \
         records in {wall:.1?} wall, {cpu:.2?} CPU = {per_million:.2} CPU-seconds per million \
         records",
        runtime = R::NAME,
        passes = args.passes,
        shards = args.shards,
        per_million = cpu.as_secs_f64() * 1e6 / total as f64,
    );
    Ok(())
}

/// One fresh EFO consumer reading every record: its CPU and wall time.
async fn read_all<R: TestRuntime>(
    env: &Env<R>,
    stream: &str,
    kinesis: aws_sdk_kinesis::Client,
    args: &Args,
) -> Result<(Duration, Duration)> {
    let n = args.records;
    let cpu0 = cpu_time()?;
    let wall0 = Instant::now();
    let consumer = env
        .builder(stream, &env.table(), "w1")
        .enhanced_fan_out(unique("app"))
        .kinesis_client(kinesis)
        .batching(Batching {
            count: args.batch,
            byte_size: 0,
            period: None,
        })
        .build(&env.sdk)
        .await?;
    let mut batches = consumer.batches();
    let got = env
        .take(&mut batches, n as usize, Duration::from_secs(1200))
        .await?;
    let wall = wall0.elapsed();
    let cpu = cpu_time()? - cpu0;
    anyhow::ensure!(ids(&got).len() as u64 == n, "every record delivered");
    drop(batches);
    consumer.shutdown().await?;
    Ok((cpu, wall))
}

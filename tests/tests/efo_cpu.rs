//! CPU time per million records of an EFO run against the emulators.
//! Not part of the default suite (it writes many records); run with
//!
//! ```text
//! eval "$(scripts/emulators.sh env)"
//! KINESIN_CPU_RECORDS=200000 cargo test -p kinesin-tests --test efo_cpu -- --ignored --nocapture
//! ```
//!
//! It measures this process's user+system CPU time (from /proc/self/stat)
//! from the consumer's build until every record was delivered and acked;
//! the records are written before that. The mock caps throughput, so the
//! figure to compare is CPU per record, not records per second.

mod common;

use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use common::*;

fn cpu_time() -> Result<Duration> {
    let stat = std::fs::read_to_string("/proc/self/stat").context("/proc/self/stat")?;
    // Fields after the command name (which may hold spaces) start at 3.
    let rest = stat.rsplit_once(')').context("stat format")?.1;
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let ticks: u64 = fields[11].parse::<u64>()? + fields[12].parse::<u64>()?;
    // USER_HZ is 100 on Linux.
    Ok(Duration::from_millis(ticks * 10))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "measurement; run explicitly (see the file doc)"]
async fn efo_cpu_per_million_records() -> Result<()> {
    let n: u64 = std::env::var("KINESIN_CPU_RECORDS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(100_000);
    let sdk = sdk().await;
    let k = kinesis(&sdk);
    let stream = unique("cpu");
    let (_arn, _guard) = create_stream(&k, &stream, 10).await?;
    let items = numbered(0..n, 1000);
    let put_start = Instant::now();
    put(&k, &stream, &items).await?;
    eprintln!("put {n} records in {:?}", put_start.elapsed());

    let cpu0 = cpu_time()?;
    let wall0 = Instant::now();
    let consumer = builder(&stream, &unique("leases"), "w1")
        .enhanced_fan_out(unique("app"))
        .batching(kinesin_tokio::Batching {
            count: 500,
            byte_size: 0,
            period: None,
        })
        .build(&sdk)
        .await?;
    let mut batches = consumer.batches();
    let got = take(&mut batches, n as usize, Duration::from_secs(600)).await?;
    let wall = wall0.elapsed();
    let cpu = cpu_time()? - cpu0;
    assert_eq!(ids(&got).len() as u64, n);
    drop(batches);
    consumer.shutdown().await?;
    let per_million = cpu.as_secs_f64() * 1e6 / n as f64;
    eprintln!(
        "EFO: {n} records in {wall:?} wall, {cpu:?} CPU = {per_million:.2} CPU-seconds per \
         million records"
    );
    Ok(())
}

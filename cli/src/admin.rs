//! `kinesin admin ...` (hidden): small operations for the demo and tests.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::io::BufRead;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use aws_sdk_kinesis::types::Shard;
use base64::Engine;
use clap::Subcommand;

use crate::produce::{sdk_error, wait_active};

/// The call deadline of the admin operations (as the consumer's).
const DEFAULT_DEADLINE: std::time::Duration = std::time::Duration::from_secs(15);

#[derive(Subcommand, Debug)]
pub enum AdminCommand {
    /// Split a shard at the middle of its hash range; waits until the
    /// stream is ACTIVE again and prints the children.
    Split {
        /// Stream name.
        #[arg(long, value_name = "NAME")]
        stream: String,
        /// Shard id (e.g. shardId-000000000001).
        #[arg(long, value_name = "ID")]
        shard: String,
    },
    /// Count the records of `kinesin consume` outputs by the unique id that
    /// `kinesin produce` puts at the start of each record's data.
    Tally {
        /// Records produced (prints how many were never delivered).
        #[arg(long, value_name = "N")]
        expect: Option<u64>,
        /// JSON Lines files.
        #[arg(required = true)]
        files: Vec<PathBuf>,
    },
}

pub async fn run(cmd: AdminCommand) -> Result<ExitCode> {
    match cmd {
        AdminCommand::Split { stream, shard } => split(&stream, &shard).await,
        AdminCommand::Tally { expect, files } => tally(expect, &files),
    }
}

async fn list_shards(k: &aws_sdk_kinesis::Client, stream: &str) -> Result<Vec<Shard>> {
    let mut shards = Vec::new();
    let mut token: Option<String> = None;
    loop {
        let req = match &token {
            Some(t) => k.list_shards().next_token(t),
            None => k.list_shards().stream_name(stream),
        };
        let out = req
            .send()
            .await
            .map_err(|e| sdk_error(e, &format!("ListShards {stream}")))?;
        shards.extend(out.shards.unwrap_or_default());
        match out.next_token {
            Some(t) => token = Some(t),
            None => break,
        }
    }
    Ok(shards)
}

async fn split(stream: &str, shard_id: &str) -> Result<ExitCode> {
    let sdk = crate::aws_config(None).await?;
    let k = aws_sdk_kinesis::Client::new(&sdk);
    wait_active(&k, stream, false, DEFAULT_DEADLINE).await?;
    let shards = list_shards(&k, stream).await?;
    let shard = shards
        .iter()
        .find(|s| s.shard_id == shard_id)
        .with_context(|| format!("stream {stream} has no shard {shard_id}"))?;
    let range = shard
        .hash_key_range
        .as_ref()
        .context("ListShards returned a shard without a hash key range")?;
    let start: u128 = range
        .starting_hash_key
        .parse()
        .context("starting hash key")?;
    let end: u128 = range.ending_hash_key.parse().context("ending hash key")?;
    if end <= start {
        bail!("shard {shard_id} covers a single hash key: it cannot be split");
    }
    let mid = start + (end - start) / 2 + 1;
    let t0 = Instant::now();
    k.split_shard()
        .stream_name(stream)
        .shard_to_split(shard_id)
        .new_starting_hash_key(mid.to_string())
        .send()
        .await
        .map_err(|e| sdk_error(e, &format!("SplitShard {stream} {shard_id}")))?;
    tokio::time::sleep(Duration::from_millis(200)).await;
    wait_active(&k, stream, false, DEFAULT_DEADLINE).await?;
    let children: Vec<String> = list_shards(&k, stream)
        .await?
        .into_iter()
        .filter(|s| s.parent_shard_id.as_deref() == Some(shard_id))
        .map(|s| s.shard_id)
        .collect();
    eprintln!(
        "split {stream} {shard_id} into {} in {:.1} s",
        children.join(" and "),
        t0.elapsed().as_secs_f64()
    );
    println!("{}", children.join(" "));
    Ok(ExitCode::SUCCESS)
}

fn tally(expect: Option<u64>, files: &[PathBuf]) -> Result<ExitCode> {
    let mut seen: HashMap<String, u32> = HashMap::new();
    let mut lines = 0u64;
    let mut per_file: BTreeMap<String, (u64, BTreeSet<String>)> = BTreeMap::new();
    let b64 = base64::engine::general_purpose::STANDARD;
    for f in files {
        let file = std::fs::File::open(f).with_context(|| format!("opening {}", f.display()))?;
        let mut n = 0u64;
        let mut shards = BTreeSet::new();
        for (i, line) in std::io::BufReader::new(file).lines().enumerate() {
            let line = line.with_context(|| format!("reading {}", f.display()))?;
            if line.trim().is_empty() {
                continue;
            }
            let v: serde_json::Value = serde_json::from_str(&line)
                .with_context(|| format!("{}:{}: not JSON", f.display(), i + 1))?;
            if let Some(s) = v["shard"].as_str() {
                if !shards.contains(s) {
                    shards.insert(s.to_owned());
                }
            }
            let data = v["data"]
                .as_str()
                .with_context(|| format!("{}:{}: no data field", f.display(), i + 1))?;
            let data = b64
                .decode(data)
                .with_context(|| format!("{}:{}: data is not base64", f.display(), i + 1))?;
            let id = data.split(|b| *b == b' ').next().unwrap_or(&[]);
            *seen
                .entry(String::from_utf8_lossy(id).into_owned())
                .or_default() += 1;
            n += 1;
        }
        lines += n;
        per_file.insert(f.display().to_string(), (n, shards));
    }
    let unique = seen.len() as u64;
    println!("delivered {lines}");
    println!("unique {unique}");
    println!("duplicates {}", lines - unique);
    if let Some(e) = expect {
        println!("missing {}", e.saturating_sub(unique));
    }
    for (f, (n, shards)) in per_file {
        let shards: Vec<String> = shards.into_iter().collect();
        println!("file {f} {n} {}", shards.join(" "));
    }
    Ok(ExitCode::SUCCESS)
}

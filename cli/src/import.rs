//! `kinesin leases import` and `kinesin leases rewind`: checkpoints carried
//! over from Bento or KCL, and a stopped fleet moved to another position.
//!
//! Source schemas read (never written):
//! - Bento's checkpoint table: hash key `StreamID` (the stream as Bento was
//!   configured: name or ARN), range key `ShardID`; `SequenceNumber` (the
//!   last acknowledged record: resume after it), `ClientID` and
//!   `LeaseTimeout` (RFC 3339) while a client holds the shard; a final
//!   checkpoint removes both.
//! - A KCL 1.x/2.x/3.x lease table: hash key `leaseKey` (`shardId-...`, or
//!   `account:stream:creationEpoch:shardId` for a multi-stream
//!   application), `checkpoint` (a sequence number or the sentinels
//!   `SHARD_END`, `TRIM_HORIZON`, `LATEST`, `AT_TIMESTAMP`),
//!   `checkpointSubSequenceNumber` (the KPL sub-record: records up to and
//!   including it are done), `leaseOwner`, `leaseCounter` (bumped by every
//!   renewal: a live lease is one whose counter moves); `parentShardIds`
//!   is not read: parents come from ListShards (below).
//!
//! Rules encoded: a Bento `SequenceNumber` s becomes `After(s)`; a KCL
//! checkpoint (s, sub) becomes `Within(s, sub)` (sub-records 0..=sub done,
//! so the next consume delivers sub + 1 onwards, and nothing before), a
//! KCL checkpoint without a sub-sequence `After(s)`, `SHARD_END` becomes
//! `ShardEnd`; `TRIM_HORIZON` / `LATEST` / `AT_TIMESTAMP` are no
//! checkpoint (the shard starts where `consume --start` says; printed).
//! Parents come from ListShards, so a child still waits for its parents.
//! Import refuses while the source fleet holds live leases (Bento: a
//! `LeaseTimeout` in the future; KCL: a `leaseCounter` that moved during
//! the liveness wait) and while a kinesin worker holds a target row,
//! unless `--force`. It is idempotent: a row that already has the imported
//! checkpoint is left alone; a row with another checkpoint is replaced only
//! with `--force` (it may be progress of a kinesin fleet).
//!
//! A replaced row is deleted (conditional on being free with the token
//! read) and created again with the token + 1, so a token never goes down.
//! `rewind` replaces every row of the stream with a row without
//! checkpoint anchored at the position: `oldest` at the stream's creation
//! (nothing is older), `latest` at now, a timestamp at itself (at the
//! stream's creation if earlier); `consume --start latest` then starts
//! every shard exactly there (LATEST is anchored at the row's creation
//! time), `--start oldest` at the oldest record.

use std::collections::{BTreeMap, HashMap};
use std::process::ExitCode;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use anyhow::{bail, Context, Result};
use aws_sdk_dynamodb::types::AttributeValue;
use kinesin_aws::dynamo::{ATTR_KEY, ATTR_STREAM, SHARD_KEY_PREFIX};
use kinesin_aws::{DynamoLeaseStore, Kinesis, LeaseStore};
use kinesin_core::ids::{FencingToken, ShardId, ShardRef, StreamId};
use kinesin_core::io::{ErrorClass, ShardInfo};
use kinesin_core::sequence::{Checkpoint, ExtSeq, SeqNum};
use kinesin_core::table::{LeaseRow, LeaseWrite};

use crate::deadline::call;

type Item = HashMap<String, AttributeValue>;

/// Where the checkpoints come from.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Source {
    /// Bento's aws_kinesis checkpoint table.
    Bento,
    /// A KCL 1.x / 2.x / 3.x lease table.
    Kcl,
}

/// `kinesin leases import`.
#[derive(clap::Args, Debug)]
pub struct ImportArgs {
    /// What wrote the source table.
    #[arg(long, value_enum)]
    pub from: Source,
    /// The source checkpoint / lease table (read only).
    #[arg(long, value_name = "TABLE")]
    pub source_table: String,
    /// kinesin's lease table (written).
    #[arg(long, value_name = "TABLE")]
    pub lease_table: String,
    /// The stream (name or ARN).
    #[arg(long, value_name = "NAME")]
    pub stream: String,
    /// Create the lease table if it is missing.
    #[arg(long)]
    pub create_table: bool,
    /// Import although the source fleet holds live leases or a kinesin row
    /// has another checkpoint or an owner.
    #[arg(long)]
    pub force: bool,
    /// Print what would be imported; write nothing.
    #[arg(long)]
    pub dry_run: bool,
    /// KCL: how long to watch `leaseCounter` for renewals (live leases).
    #[arg(long, value_name = "SECS", default_value_t = 12.0)]
    pub liveness_wait: f64,
    /// Deadline of one AWS call.
    #[arg(long, value_name = "SECS", default_value_t = crate::deadline::DEFAULT_CALL_TIMEOUT_SECS)]
    pub call_timeout: f64,
}

/// `kinesin leases rewind`.
#[derive(clap::Args, Debug)]
pub struct RewindArgs {
    /// kinesin's lease table.
    #[arg(long, value_name = "TABLE")]
    pub lease_table: String,
    /// The stream (name or ARN).
    #[arg(long, value_name = "NAME")]
    pub stream: String,
    /// oldest, latest or an RFC 3339 timestamp.
    #[arg(long, value_name = "oldest|latest|RFC3339-TIMESTAMP", value_parser = crate::config::parse_start)]
    pub to: crate::config::Start,
    /// Rewind although a worker holds a lease (a crashed fleet).
    #[arg(long)]
    pub force: bool,
    /// Print what would change; write nothing.
    #[arg(long)]
    pub dry_run: bool,
    /// Deadline of one AWS call.
    #[arg(long, value_name = "SECS", default_value_t = crate::deadline::DEFAULT_CALL_TIMEOUT_SECS)]
    pub call_timeout: f64,
}

/// One source row, decoded.
#[derive(Clone, Debug)]
struct SourceRow {
    shard: ShardId,
    /// The checkpoint to write (None: none).
    checkpoint: Option<Checkpoint>,
    /// What the source said, for the printout.
    said: String,
    /// A live holder (owner and why live).
    live: Option<String>,
}

/// Everything the commands need.
struct Ctx {
    kinesis: Kinesis,
    dynamo: aws_sdk_dynamodb::Client,
    store: DynamoLeaseStore,
    after: Duration,
}

async fn ctx(lease_table: &str, call_timeout: f64) -> Result<Ctx> {
    let after = crate::deadline::from_secs(call_timeout)?;
    let sdk = crate::aws_config(None).await?;
    let dynamo = aws_sdk_dynamodb::Client::new(&sdk);
    Ok(Ctx {
        kinesis: Kinesis::new(aws_sdk_kinesis::Client::new(&sdk)),
        store: DynamoLeaseStore::new(dynamo.clone(), lease_table),
        dynamo,
        after,
    })
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
        .unwrap_or(0)
}

/// The stream's ARN and its shards.
/// The stream's ARN, its creation time (unix ms, 0 when unknown) and its
/// shards.
async fn stream_shards(c: &Ctx, stream: &str) -> Result<(String, u64, Vec<ShardInfo>)> {
    let (arn, created_ms) = call(
        "Kinesis DescribeStreamSummary",
        c.after,
        c.kinesis.describe_stream(stream),
    )
    .await
    .with_context(|| format!("stream {stream:?}"))?;
    let shards = call(
        "Kinesis ListShards",
        c.after * 4,
        c.kinesis.list_shards(&StreamId::new(&arn)),
    )
    .await?;
    Ok((arn, created_ms.unwrap_or(0), shards))
}

/// The kinesin rows of the stream, by shard; a missing table is an error
/// naming `--create-table` unless `create`.
async fn target_rows(c: &Ctx, arn: &str, create: bool) -> Result<BTreeMap<ShardId, LeaseRow>> {
    if create {
        call(
            "DynamoDB CreateTable / DescribeTable (lease table)",
            c.after * 8,
            c.store.create_table_if_missing(),
        )
        .await?;
    }
    let read =
        tokio::time::timeout(c.after, Box::pin(c.store.read_leases(&StreamId::new(arn)))).await;
    let rows = match read {
        Err(_) => bail!(
            "DynamoDB Query (lease table) got no answer within {:?}: check the endpoint, the \
             network and the region (--call-timeout sets the deadline)",
            c.after
        ),
        Ok(Err(e)) if e.class() == ErrorClass::ResourceNotFound => bail!(
            "lease table {:?} does not exist: create it with --create-table",
            c.store.table()
        ),
        Ok(r) => r.context("DynamoDB Query (lease table)")?,
    };
    for e in &rows.bad {
        eprintln!("warning: {e}");
    }
    Ok(rows
        .rows
        .into_iter()
        .map(|r| (r.shard.shard.clone(), r))
        .collect())
}

/// Replace (or create) the row of `shard` with `checkpoint`; `existing` is
/// the row as read (free, or `--force`).
async fn write_row(
    c: &Ctx,
    arn: &str,
    info: &ShardInfo,
    existing: Option<&LeaseRow>,
    checkpoint: Option<Checkpoint>,
    created_ms: u64,
) -> Result<()> {
    let shard = ShardRef::new(StreamId::new(arn), info.shard.clone());
    let mut row = LeaseRow::new(shard, info.parents.clone(), created_ms);
    row.checkpoint = checkpoint;
    if let Some(old) = existing {
        row.token = FencingToken(old.token.0.saturating_add(1));
        let mut del = c
            .dynamo
            .delete_item()
            .table_name(c.store.table())
            .key(ATTR_STREAM, AttributeValue::S(arn.to_owned()))
            .key(
                ATTR_KEY,
                AttributeValue::S(format!("{SHARD_KEY_PREFIX}{}", info.shard.as_str())),
            )
            .expression_attribute_names("#t", "token")
            .expression_attribute_values(":t", AttributeValue::N(old.token.0.to_string()));
        del = match &old.owner {
            Some(o) => del
                .condition_expression("#t = :t AND #o = :o")
                .expression_attribute_names("#o", "owner")
                .expression_attribute_values(":o", AttributeValue::S(o.encode())),
            None => del
                .condition_expression("#t = :t AND attribute_not_exists(#o)")
                .expression_attribute_names("#o", "owner"),
        };
        call("DynamoDB DeleteItem (lease row)", c.after, del.send())
            .await
            .with_context(|| {
                format!(
                    "replacing the row of {} (it changed since it was read: is a worker running?)",
                    info.shard
                )
            })?;
    }
    call(
        "DynamoDB PutItem (lease row)",
        c.after,
        c.store.write_lease(&LeaseWrite::Create(row)),
    )
    .await
    .with_context(|| format!("writing the row of {}", info.shard))?;
    Ok(())
}

fn show(cp: &Option<Checkpoint>) -> String {
    match cp {
        None => "none".into(),
        Some(c) => match c.to_parts() {
            (v, None) => v,
            (v, Some(sub)) => format!("{v}/{sub}"),
        },
    }
}

/// Paginated Query or Scan of a source table.
async fn read_source(c: &Ctx, table: &str, bento_stream: Option<&str>) -> Result<Vec<Item>> {
    let mut items = Vec::new();
    let mut start: Option<Item> = None;
    loop {
        let page = match bento_stream {
            Some(s) => {
                let q = c
                    .dynamo
                    .query()
                    .table_name(table)
                    .consistent_read(true)
                    .key_condition_expression("#s = :s")
                    .expression_attribute_names("#s", "StreamID")
                    .expression_attribute_values(":s", AttributeValue::S(s.to_owned()))
                    .set_exclusive_start_key(start.take());
                let out = call("DynamoDB Query (source table)", c.after, q.send()).await?;
                (out.items.unwrap_or_default(), out.last_evaluated_key)
            }
            None => {
                let q = c
                    .dynamo
                    .scan()
                    .table_name(table)
                    .consistent_read(true)
                    .set_exclusive_start_key(start.take());
                let out = call("DynamoDB Scan (source table)", c.after, q.send()).await?;
                (out.items.unwrap_or_default(), out.last_evaluated_key)
            }
        };
        items.extend(page.0);
        match page.1 {
            Some(k) if !k.is_empty() => start = Some(k),
            _ => return Ok(items),
        }
    }
}

fn s_attr<'a>(item: &'a Item, name: &str) -> Option<&'a str> {
    match item.get(name) {
        Some(AttributeValue::S(s)) if !s.is_empty() => Some(s),
        _ => None,
    }
}

fn n_attr<'a>(item: &'a Item, name: &str) -> Option<&'a str> {
    match item.get(name) {
        Some(AttributeValue::N(n)) => Some(n),
        _ => None,
    }
}

/// `StreamID` values under which Bento may have written the stream: as
/// given, and its name / ARN form.
fn bento_ids(given: &str, arn: &str) -> Vec<String> {
    let name = arn.rsplit_once(":stream/").map(|(_, n)| n).unwrap_or(arn);
    let mut ids = vec![given.to_owned()];
    for id in [arn, name] {
        if !ids.iter().any(|x| x == id) {
            ids.push(id.to_owned());
        }
    }
    ids
}

async fn bento_rows(c: &Ctx, table: &str, given: &str, arn: &str) -> Result<Vec<SourceRow>> {
    let mut items = Vec::new();
    for id in bento_ids(given, arn) {
        items = read_source(c, table, Some(&id)).await?;
        if !items.is_empty() {
            break;
        }
    }
    let now = time::OffsetDateTime::now_utc();
    let mut rows = Vec::new();
    for item in &items {
        let Some(shard) = s_attr(item, "ShardID") else {
            eprintln!("warning: a row of {table} without ShardID: skipped");
            continue;
        };
        let (checkpoint, said) = match s_attr(item, "SequenceNumber") {
            None => (None, "no SequenceNumber".to_owned()),
            Some(seq) => {
                let cp = SeqNum::parse(seq).map(Checkpoint::After).map_err(|e| {
                    anyhow::anyhow!("{table} row {shard}: SequenceNumber {seq:?}: {e}")
                })?;
                (Some(cp), format!("SequenceNumber {seq}"))
            }
        };
        let live = match (s_attr(item, "ClientID"), s_attr(item, "LeaseTimeout")) {
            (Some(client), Some(until)) => {
                let until_t = time::OffsetDateTime::parse(
                    until,
                    &time::format_description::well_known::Rfc3339,
                )
                .ok();
                match until_t {
                    Some(t) if t <= now => None,
                    _ => Some(format!("held by Bento client {client} until {until}")),
                }
            }
            _ => None,
        };
        rows.push(SourceRow {
            shard: ShardId::new(shard),
            checkpoint,
            said,
            live,
        });
    }
    Ok(rows)
}

/// The shard id of a KCL `leaseKey` of this stream (`None`: another
/// stream's lease in a multi-stream table).
fn kcl_shard(lease_key: &str, stream_name: &str) -> Option<String> {
    if lease_key.starts_with("shardId-") {
        return Some(lease_key.to_owned());
    }
    // account:stream:creationEpoch:shardId
    let parts: Vec<&str> = lease_key.split(':').collect();
    match parts.as_slice() {
        [_account, stream, _epoch, shard] if *stream == stream_name => Some((*shard).to_owned()),
        _ => None,
    }
}

fn kcl_checkpoint(item: &Item, key: &str) -> Result<(Option<Checkpoint>, String)> {
    let Some(value) = s_attr(item, "checkpoint") else {
        return Ok((None, "no checkpoint".into()));
    };
    let sub = match n_attr(item, "checkpointSubSequenceNumber") {
        None => None,
        Some(n) => Some(n.parse::<u32>().with_context(|| {
            format!("KCL lease {key}: checkpointSubSequenceNumber {n:?} is not a sub-sequence")
        })?),
    };
    let said = match sub {
        Some(s) => format!("checkpoint {value} sub {s}"),
        None => format!("checkpoint {value}"),
    };
    Ok(match value {
        "SHARD_END" => (Some(Checkpoint::ShardEnd), said),
        "TRIM_HORIZON" | "LATEST" | "AT_TIMESTAMP" => (None, said),
        seq => {
            let seq = SeqNum::parse(seq)
                .map_err(|e| anyhow::anyhow!("KCL lease {key}: checkpoint {seq:?}: {e}"))?;
            let cp = match sub {
                Some(sub) => Checkpoint::Within(ExtSeq::new(seq, sub)),
                None => Checkpoint::After(seq),
            };
            (Some(cp), said)
        }
    })
}

async fn kcl_rows(c: &Ctx, table: &str, arn: &str, wait: Duration) -> Result<Vec<SourceRow>> {
    let name = arn.rsplit_once(":stream/").map(|(_, n)| n).unwrap_or(arn);
    let first = read_source(c, table, None).await?;
    let counters = |items: &[Item]| -> BTreeMap<String, (Option<String>, Option<String>)> {
        items
            .iter()
            .filter_map(|i| {
                let key = s_attr(i, "leaseKey")?;
                Some((
                    key.to_owned(),
                    (
                        s_attr(i, "leaseOwner").map(str::to_owned),
                        n_attr(i, "leaseCounter").map(str::to_owned),
                    ),
                ))
            })
            .collect()
    };
    let before = counters(&first);
    // A live KCL worker renews its leases (leaseCounter + 1) every
    // failover time / 3: watch for that.
    let owned = before.values().any(|(o, _)| o.is_some());
    let after = if owned && !wait.is_zero() {
        tokio::time::sleep(wait).await;
        counters(&read_source(c, table, None).await?)
    } else {
        before.clone()
    };
    let mut rows = Vec::new();
    for item in &first {
        let Some(key) = s_attr(item, "leaseKey") else {
            eprintln!("warning: a row of {table} without leaseKey: skipped");
            continue;
        };
        let Some(shard) = kcl_shard(key, name) else {
            continue;
        };
        let (checkpoint, said) = kcl_checkpoint(item, key)?;
        let live = match (before.get(key), after.get(key)) {
            (Some((Some(owner), c0)), Some((_, c1))) if c0 != c1 => Some(format!(
                "held by KCL worker {owner} (leaseCounter moved from {} to {} in {wait:?})",
                c0.as_deref().unwrap_or("-"),
                c1.as_deref().unwrap_or("-")
            )),
            _ => None,
        };
        rows.push(SourceRow {
            shard: ShardId::new(shard),
            checkpoint,
            said,
            live,
        });
    }
    Ok(rows)
}

pub async fn import(args: ImportArgs) -> Result<ExitCode> {
    if !(args.liveness_wait.is_finite() && args.liveness_wait >= 0.0 && args.liveness_wait < 1e6) {
        return Err(crate::config::UsageError(format!(
            "invalid value '{}' for '--liveness-wait <SECS>': must be 0 or more seconds",
            args.liveness_wait
        ))
        .into());
    }
    let c = ctx(&args.lease_table, args.call_timeout).await?;
    let (arn, _, shards) = stream_shards(&c, &args.stream).await?;
    let source = match args.from {
        Source::Bento => bento_rows(&c, &args.source_table, &args.stream, &arn).await,
        Source::Kcl => {
            kcl_rows(
                &c,
                &args.source_table,
                &arn,
                Duration::from_secs_f64(args.liveness_wait),
            )
            .await
        }
    }
    .with_context(|| format!("reading the source table {:?}", args.source_table))?;
    if source.is_empty() {
        bail!(
            "no checkpoint of stream {:?} in {:?} (a {} table?)",
            args.stream,
            args.source_table,
            match args.from {
                Source::Bento => "Bento checkpoint",
                Source::Kcl => "KCL lease",
            }
        );
    }
    let live: Vec<String> = source
        .iter()
        .filter_map(|r| r.live.as_ref().map(|l| format!("{} {l}", r.shard)))
        .collect();
    if !live.is_empty() && !args.force {
        bail!(
            "the source fleet still holds live leases ({}): stop it first so its checkpoints are \
             final, or pass --force",
            live.join("; ")
        );
    }
    let existing = if args.dry_run {
        match target_rows(&c, &arn, false).await {
            Ok(r) => r,
            Err(_) if args.create_table => BTreeMap::new(),
            Err(e) => return Err(e),
        }
    } else {
        target_rows(&c, &arn, args.create_table).await?
    };
    let by_shard: BTreeMap<&ShardId, &SourceRow> = source.iter().map(|r| (&r.shard, r)).collect();
    let listed: BTreeMap<&ShardId, &ShardInfo> = shards.iter().map(|s| (&s.shard, s)).collect();
    for r in &source {
        if !listed.contains_key(&r.shard) {
            println!(
                "{}  {}: not a shard of the stream any more (past retention): skipped",
                r.shard, r.said
            );
        }
    }
    let mut conflicts = Vec::new();
    let mut plan: Vec<(&ShardInfo, &SourceRow)> = Vec::new();
    for info in &shards {
        let Some(src) = by_shard.get(&info.shard) else {
            println!(
                "{}  no checkpoint in the source: not written (consume's --start applies)",
                info.shard
            );
            continue;
        };
        if let Some(row) = existing.get(&info.shard) {
            if row.checkpoint == src.checkpoint && row.owner.is_none() {
                println!(
                    "{}  {}: already imported (checkpoint {})",
                    info.shard,
                    src.said,
                    show(&src.checkpoint)
                );
                continue;
            }
            if !args.force {
                let who = match &row.owner {
                    Some(o) => format!(", held by kinesin worker {}", o.worker),
                    None => String::new(),
                };
                conflicts.push(format!(
                    "{} has checkpoint {}{who}",
                    info.shard,
                    show(&row.checkpoint)
                ));
                continue;
            }
        }
        plan.push((info, src));
    }
    if !conflicts.is_empty() {
        bail!(
            "the lease table already has other rows for this stream ({}): they may be a kinesin \
             fleet's progress; pass --force to replace them",
            conflicts.join("; ")
        );
    }
    let created = now_ms();
    for (info, src) in plan {
        let note = if src.checkpoint.is_none() {
            " (no checkpoint: the shard starts where consume's --start says)"
        } else {
            ""
        };
        if args.dry_run {
            println!(
                "{}  {}: would import checkpoint {}{note}",
                info.shard,
                src.said,
                show(&src.checkpoint)
            );
            continue;
        }
        write_row(
            &c,
            &arn,
            info,
            existing.get(&info.shard),
            src.checkpoint.clone(),
            created,
        )
        .await?;
        println!(
            "{}  {}: imported checkpoint {}{note}",
            info.shard,
            src.said,
            show(&src.checkpoint)
        );
    }
    Ok(ExitCode::SUCCESS)
}

pub async fn rewind(args: RewindArgs) -> Result<ExitCode> {
    use crate::config::Start;
    let c = ctx(&args.lease_table, args.call_timeout).await?;
    let (arn, stream_created_ms, shards) = stream_shards(&c, &args.stream).await?;
    let existing = target_rows(&c, &arn, false).await?;
    let held: Vec<String> = existing
        .values()
        .filter_map(|r| {
            r.owner
                .as_ref()
                .map(|o| format!("{} by {}", r.shard.shard, o.worker))
        })
        .collect();
    if !held.is_empty() && !args.force {
        bail!(
            "leases are held ({}): stop the fleet first (a graceful stop releases them), or pass \
             --force if its workers crashed",
            held.join(", ")
        );
    }
    let (anchor, label, hint) = match &args.to {
        Start::Oldest => (0, "oldest".to_owned(), "any --start"),
        Start::Latest => (now_ms(), "latest (now)".to_owned(), "--start latest"),
        Start::At(t) => {
            let ms = t
                .duration_since(UNIX_EPOCH)
                .map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
                .unwrap_or(0);
            (ms, format!("{ms} ms since the epoch"), "--start latest")
        }
    };
    // Nothing arrived before the stream existed: an anchor before its
    // creation reads the same records, and a row created before the stream
    // would be taken for an earlier stream's (consume refuses those).
    let anchor = anchor.max(stream_created_ms);
    for info in &shards {
        let row = existing.get(&info.shard);
        let from = show(&row.and_then(|r| r.checkpoint.clone()));
        if args.dry_run {
            println!("{}  checkpoint {from}: would rewind to {label}", info.shard);
            continue;
        }
        write_row(&c, &arn, info, row, None, anchor).await?;
        println!("{}  checkpoint {from}: rewound to {label}", info.shard);
    }
    if !args.dry_run {
        println!(
            "next: kinesin consume --lease-table {} {hint}",
            args.lease_table
        );
    }
    Ok(ExitCode::SUCCESS)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kcl_lease_keys_single_and_multi_stream() {
        assert_eq!(
            kcl_shard("shardId-000000000001", "s").as_deref(),
            Some("shardId-000000000001")
        );
        assert_eq!(
            kcl_shard(
                "111122223333:orders:1700000000:shardId-000000000002",
                "orders"
            )
            .as_deref(),
            Some("shardId-000000000002")
        );
        assert_eq!(
            kcl_shard(
                "111122223333:other:1700000000:shardId-000000000002",
                "orders"
            ),
            None
        );
    }

    #[test]
    fn kcl_checkpoints_map_sub_sequences_and_sentinels() {
        let item = |cp: &str, sub: Option<&str>| {
            let mut i = Item::new();
            i.insert("checkpoint".into(), AttributeValue::S(cp.into()));
            if let Some(s) = sub {
                i.insert(
                    "checkpointSubSequenceNumber".into(),
                    AttributeValue::N(s.into()),
                );
            }
            i
        };
        let seq = "49590338271490256608559692538361571095921575989136588898";
        let (cp, _) = kcl_checkpoint(&item(seq, Some("3")), "k").unwrap();
        assert_eq!(
            cp,
            Some(Checkpoint::Within(ExtSeq::new(
                SeqNum::parse(seq).unwrap(),
                3
            )))
        );
        let (cp, _) = kcl_checkpoint(&item(seq, None), "k").unwrap();
        assert_eq!(cp, Some(Checkpoint::After(SeqNum::parse(seq).unwrap())));
        let (cp, _) = kcl_checkpoint(&item("SHARD_END", Some("0")), "k").unwrap();
        assert_eq!(cp, Some(Checkpoint::ShardEnd));
        for s in ["TRIM_HORIZON", "LATEST", "AT_TIMESTAMP"] {
            assert_eq!(kcl_checkpoint(&item(s, Some("0")), "k").unwrap().0, None);
        }
        assert!(kcl_checkpoint(&item("12x", None), "k").is_err());
        assert!(kcl_checkpoint(&item(seq, Some("-1")), "k").is_err());
    }

    #[test]
    fn bento_stream_ids_are_tried_as_given_then_arn_then_name() {
        let arn = "arn:aws:kinesis:us-east-1:1:stream/orders";
        assert_eq!(bento_ids("orders", arn), ["orders", arn]);
        assert_eq!(bento_ids(arn, arn), [arn, "orders"]);
    }
}

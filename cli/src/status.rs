//! `kinesin status`: one view of a fleet, from the lease table and the
//! stream, for operators. It only reads (Query/Scan/GetItem on the lease
//! table, ListShards, GetShardIterator and GetRecords with `Limit = 1` on
//! the stream); it never writes a row.
//!
//! Per shard: owner, fencing token, checkpoint, parents and children, state
//! (held / handing off / free / waits for parents / ended / not in the
//! table yet / gone from the stream) and lag (`MillisBehindLatest` of one
//! GetRecords from the checkpoint, where the shard has a checkpoint and is
//! still in the stream). Per worker: heartbeat age, lease count.
//!
//! Heartbeat rows carry no wall-clock time (liveness is judged by seeing
//! the beat counter change on the observer's own clock, SPEC section 4), so
//! the age is measured the same way: heartbeats are read twice `--sample`
//! seconds apart (and on every `--watch` refresh); a worker whose beat
//! changed has `heartbeat_age_ms` (an upper bound: the time since the read
//! before the change was seen), one whose beat did not change has
//! `unchanged_for_ms` (a lower bound on its age) instead.
//!
//! Invariant: every value that comes from the table or the stream is
//! printed through [`term_safe`] in the text table, so a worker id or a
//! row written by anyone cannot move the cursor, clear the screen or
//! reorder text on the operator's terminal (`--json` escapes through JSON).

use std::borrow::Cow;
use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write as _;
use std::io::{IsTerminal, Write as _};
use std::process::ExitCode;
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use clap::Args;
use kinesin_aws::{DynamoLeaseStore, Kinesis, LeaseStore};
use kinesin_core::ids::{ShardRef, StreamId};
use kinesin_core::io::{ErrorClass, ShardInfo};
use kinesin_core::sequence::Checkpoint;
use kinesin_core::table::{HeartbeatRow, LeaseRow};
use serde::Serialize;

/// `kinesin status`.
#[derive(Args, Debug)]
#[command(after_help = "\
Reads only: the lease table (Query, GetItem; Scan without --stream) and the
stream (ListShards, GetShardIterator, GetRecords with Limit=1 per shard for
the lag; --no-lag skips them). Heartbeat rows carry no clock: the age of a
worker's heartbeat is measured by reading them twice --sample seconds apart.")]
pub struct StatusArgs {
    /// DynamoDB lease/checkpoint table.
    #[arg(long, value_name = "TABLE")]
    pub lease_table: String,
    /// Only this stream (name or ARN); default: every stream in the table
    /// (needs dynamodb:Scan).
    #[arg(long, value_name = "NAME")]
    pub stream: Option<String>,
    /// One JSON document on stdout (with --watch: one per line per refresh).
    #[arg(long)]
    pub json: bool,
    /// Refresh every SECS (default 2) until interrupted.
    #[arg(long, value_name = "SECS", num_args = 0..=1, default_missing_value = "2")]
    pub watch: Option<f64>,
    /// Without --watch: seconds between the two heartbeat reads that
    /// measure heartbeat age (0: one read, age unknown). The default covers
    /// the default heartbeat interval (failover time 10 s / 3).
    #[arg(long, value_name = "SECS", default_value_t = 4.0)]
    pub sample: f64,
    /// Do not read the stream for lag (ListShards is still called).
    #[arg(long)]
    pub no_lag: bool,
}

/// The whole view, as `--json` prints it.
#[derive(Serialize, Debug)]
pub struct Snapshot {
    /// The lease table read.
    pub lease_table: String,
    /// One entry per stream shown.
    pub streams: Vec<StreamStatus>,
    /// Every worker with a heartbeat row.
    pub workers: Vec<WorkerStatus>,
    /// Rows that do not decode (named, left out above).
    pub bad_rows: Vec<String>,
    /// Reads that failed (the view is partial where they are named).
    pub errors: Vec<String>,
}

/// One stream.
#[derive(Serialize, Debug)]
pub struct StreamStatus {
    /// The stream id as stored in the table (an ARN for kinesin workers).
    pub stream: String,
    /// Every shard: lease rows, and shards of the stream without one.
    pub shards: Vec<ShardStatus>,
}

/// One shard.
#[derive(Serialize, Debug)]
pub struct ShardStatus {
    /// Shard id.
    pub shard: String,
    /// Worker id of the owner, if held.
    pub owner: Option<String>,
    /// Incarnation of the owner.
    pub owner_incarnation: Option<u64>,
    /// Fencing token (0 when no lease row).
    pub token: u64,
    /// Checkpoint: a sequence number, `seq/sub` inside a KPL aggregate, or
    /// `SHARD_END`.
    pub checkpoint: Option<String>,
    /// Worker asking for a graceful hand-off.
    pub pending_owner: Option<String>,
    /// Parent shards.
    pub parents: Vec<String>,
    /// Child shards (from lease rows and ListShards).
    pub children: Vec<String>,
    /// Whether the shard has a lease row.
    pub has_lease: bool,
    /// Whether ListShards still lists it (None if ListShards failed).
    pub in_stream: Option<bool>,
    /// Whether it is closed (an EndingSequenceNumber), if listed.
    pub closed: Option<bool>,
    /// `held`, `handing off`, `free`, `waiting for parents`, `ended`,
    /// `no lease`, plus `owner stopped` / `owner has no heartbeat` /
    /// `earlier incarnation` qualifiers after a comma.
    pub state: String,
    /// MillisBehindLatest from the checkpoint (0 for an ended shard;
    /// None: no checkpoint, --no-lag, or the read failed).
    pub millis_behind_latest: Option<u64>,
}

/// One worker (heartbeat row).
#[derive(Serialize, Debug)]
pub struct WorkerStatus {
    /// Worker id.
    pub worker: String,
    /// Incarnation (process start time in ms for kinesin workers).
    pub incarnation: u64,
    /// False once it shut down gracefully.
    pub alive: bool,
    /// The beat counter.
    pub beat: u64,
    /// At most this long since its last beat (seen to change).
    pub heartbeat_age_ms: Option<u64>,
    /// Not seen to beat for this long (a lower bound on its age).
    pub unchanged_for_ms: Option<u64>,
    /// Lease rows of the shown streams it owns.
    pub leases: u64,
    /// Leases it reports holding in its heartbeat (all streams).
    pub leases_reported: u32,
    /// Shards it asked to be handed.
    pub wants: u64,
}

/// What the heartbeat reads saw, on this process's monotonic clock.
#[derive(Debug, Default)]
pub struct BeatTracker {
    seen: BTreeMap<(String, u64), Seen>,
    last_read: Option<Instant>,
}

#[derive(Debug)]
struct Seen {
    beat: u64,
    first_seen: Instant,
    /// The read before the one that first saw `beat`, if `beat` was seen
    /// to change.
    changed_after: Option<Instant>,
}

impl BeatTracker {
    /// Record one read of the heartbeat rows made at `at`.
    pub fn observe(&mut self, rows: &[HeartbeatRow], at: Instant) {
        let prev = self.last_read;
        for h in rows {
            let key = (h.owner.worker.to_string(), h.owner.incarnation);
            match self.seen.get_mut(&key) {
                Some(s) if s.beat == h.beat => {}
                Some(s) => {
                    s.beat = h.beat;
                    s.first_seen = at;
                    s.changed_after = prev;
                }
                None => {
                    self.seen.insert(
                        key,
                        Seen {
                            beat: h.beat,
                            first_seen: at,
                            changed_after: None,
                        },
                    );
                }
            }
        }
        self.last_read = Some(at);
    }

    /// (age upper bound, unchanged-for lower bound) of a worker at `now`.
    pub fn age(&self, worker: &str, incarnation: u64, now: Instant) -> (Option<u64>, Option<u64>) {
        let ms = |d: Duration| u64::try_from(d.as_millis()).unwrap_or(u64::MAX);
        match self.seen.get(&(worker.to_owned(), incarnation)) {
            None => (None, None),
            Some(s) => match s.changed_after {
                Some(t) => (Some(ms(now.saturating_duration_since(t))), None),
                None => (None, Some(ms(now.saturating_duration_since(s.first_seen)))),
            },
        }
    }
}

pub async fn run(args: StatusArgs) -> Result<ExitCode> {
    if let Some(w) = args.watch {
        if !(w.is_finite() && w > 0.0) {
            return Err(crate::config::UsageError(format!(
                "invalid value '{w}' for '--watch <SECS>': must be a positive number of seconds"
            ))
            .into());
        }
    }
    if !(args.sample.is_finite() && args.sample >= 0.0) {
        return Err(crate::config::UsageError(format!(
            "invalid value '{}' for '--sample <SECS>': must be zero or a positive number of seconds",
            args.sample
        ))
        .into());
    }
    let sdk = crate::aws_config(None).await?;
    let store = DynamoLeaseStore::new(aws_sdk_dynamodb::Client::new(&sdk), &args.lease_table);
    let kinesis = Kinesis::new(aws_sdk_kinesis::Client::new(&sdk));
    let streams = streams_to_show(&args, &store, &kinesis).await?;
    let mut beats = BeatTracker::default();
    let tty = std::io::stdout().is_terminal();
    match args.watch {
        None => {
            if args.sample > 0.0 {
                read_heartbeats(&store, &args.lease_table, &mut beats).await?;
                tokio::time::sleep(Duration::from_secs_f64(args.sample)).await;
            }
            let snap = snapshot(&args, &store, &kinesis, &streams, &mut beats).await?;
            print(&snap, args.json, false)?;
        }
        Some(every) => {
            let mut tick = tokio::time::interval(Duration::from_secs_f64(every));
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tokio::select! {
                    _ = tick.tick() => {}
                    _ = tokio::signal::ctrl_c() => break,
                }
                let snap = snapshot(&args, &store, &kinesis, &streams, &mut beats).await?;
                print(&snap, args.json, tty)?;
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// The stream ids to show, as the table stores them.
async fn streams_to_show(
    args: &StatusArgs,
    store: &DynamoLeaseStore,
    kinesis: &Kinesis,
) -> Result<Vec<StreamId>> {
    match &args.stream {
        // Kinesin workers key rows by the stream ARN: resolve the name
        // (no Scan needed). A row keyed by the name as given is also shown.
        Some(s) => {
            let arn = match kinesis.resolve_stream(s).await {
                Ok(arn) => arn,
                Err(e) if e.class == ErrorClass::ResourceNotFound => {
                    anyhow::bail!("stream {s:?} does not exist")
                }
                Err(e) => return Err(anyhow::Error::new(e).context("looking up the stream")),
            };
            let mut ids = vec![StreamId::new(arn.as_str())];
            if arn != *s {
                let by_name = StreamId::new(s.as_str());
                let rows = store
                    .read_leases(&by_name)
                    .await
                    .with_context(|| format!("reading the leases of {s}"))?;
                if !rows.rows.is_empty() || !rows.bad.is_empty() {
                    ids.push(by_name);
                }
            }
            Ok(ids)
        }
        None => store
            .list_streams()
            .await
            .context("listing the streams of the lease table (needs dynamodb:Scan)"),
    }
}

async fn read_heartbeats(
    store: &DynamoLeaseStore,
    table: &str,
    beats: &mut BeatTracker,
) -> Result<kinesin_aws::Rows<HeartbeatRow>> {
    match store.read_heartbeats().await {
        Ok(h) => {
            beats.observe(&h.rows, Instant::now());
            Ok(h)
        }
        Err(e) if e.class() == ErrorClass::ResourceNotFound => {
            anyhow::bail!("lease table {table:?} does not exist")
        }
        Err(e) => Err(anyhow::Error::new(e).context("reading heartbeats")),
    }
}

/// One full read of the fleet.
pub async fn snapshot(
    args: &StatusArgs,
    store: &DynamoLeaseStore,
    kinesis: &Kinesis,
    streams: &[StreamId],
    beats: &mut BeatTracker,
) -> Result<Snapshot> {
    let heartbeats = read_heartbeats(store, &args.lease_table, beats).await?;
    let now = Instant::now();
    let mut bad_rows: Vec<String> = heartbeats.bad.iter().map(|e| e.to_string()).collect();
    let mut errors = Vec::new();
    let mut out = Vec::new();
    let mut owned: BTreeMap<(String, u64), u64> = BTreeMap::new();
    for stream in streams {
        let leases = store
            .read_leases(stream)
            .await
            .with_context(|| format!("reading the leases of {stream}"))?;
        bad_rows.extend(leases.bad.iter().map(|e| e.to_string()));
        let listed = match kinesis.list_shards(stream).await {
            Ok(s) => Some(s),
            Err(e) => {
                errors.push(format!("ListShards of {stream}: {e}"));
                None
            }
        };
        let mut shards = shard_view(&leases.rows, listed.as_deref(), &heartbeats.rows);
        for l in &leases.rows {
            if let Some(o) = &l.owner {
                *owned
                    .entry((o.worker.to_string(), o.incarnation))
                    .or_default() += 1;
            }
        }
        if !args.no_lag {
            if let Some(listed) = &listed {
                lag(
                    kinesis,
                    stream,
                    &leases.rows,
                    listed,
                    &mut shards,
                    &mut errors,
                )
                .await;
            }
        }
        out.push(StreamStatus {
            stream: stream.as_str().to_owned(),
            shards,
        });
    }
    let workers = heartbeats
        .rows
        .iter()
        .map(|h| {
            let (age, unchanged) = beats.age(&h.owner.worker, h.owner.incarnation, now);
            WorkerStatus {
                worker: h.owner.worker.to_string(),
                incarnation: h.owner.incarnation,
                alive: h.alive,
                beat: h.beat,
                heartbeat_age_ms: age,
                unchanged_for_ms: unchanged,
                leases: owned
                    .get(&(h.owner.worker.to_string(), h.owner.incarnation))
                    .copied()
                    .unwrap_or(0),
                leases_reported: h.held,
                wants: h.wants.len() as u64,
            }
        })
        .collect();
    Ok(Snapshot {
        lease_table: args.lease_table.clone(),
        streams: out,
        workers,
        bad_rows,
        errors,
    })
}

/// Every shard of one stream: its lease row (if any) joined with
/// ListShards (if it answered).
fn shard_view(
    leases: &[LeaseRow],
    listed: Option<&[ShardInfo]>,
    heartbeats: &[HeartbeatRow],
) -> Vec<ShardStatus> {
    let ended: BTreeSet<&str> = leases
        .iter()
        .filter(|l| l.checkpoint == Some(Checkpoint::ShardEnd))
        .map(|l| l.shard.shard.as_str())
        .collect();
    let mut children: BTreeMap<&str, BTreeSet<&str>> = BTreeMap::new();
    for (child, parents) in leases
        .iter()
        .map(|l| (l.shard.shard.as_str(), &l.parents))
        .chain(
            listed
                .unwrap_or_default()
                .iter()
                .map(|s| (s.shard.as_str(), &s.parents)),
        )
    {
        for p in parents {
            children.entry(p.as_str()).or_default().insert(child);
        }
    }
    let info: BTreeMap<&str, &ShardInfo> = listed
        .unwrap_or_default()
        .iter()
        .map(|s| (s.shard.as_str(), s))
        .collect();
    let kids = |s: &str| -> Vec<String> {
        children
            .get(s)
            .map(|c| c.iter().map(|c| (*c).to_owned()).collect())
            .unwrap_or_default()
    };
    let mut out: Vec<ShardStatus> = leases
        .iter()
        .map(|l| {
            let id = l.shard.shard.as_str();
            let listed_info = info.get(id);
            let checkpoint = l.checkpoint.as_ref().map(|c| match c.to_parts() {
                (v, None) => v,
                (v, Some(sub)) => format!("{v}/{sub}"),
            });
            ShardStatus {
                shard: id.to_owned(),
                owner: l.owner.as_ref().map(|o| o.worker.to_string()),
                owner_incarnation: l.owner.as_ref().map(|o| o.incarnation),
                token: l.token.0,
                checkpoint,
                pending_owner: l.pending_owner.as_ref().map(|o| o.worker.to_string()),
                parents: l.parents.iter().map(|p| p.as_str().to_owned()).collect(),
                children: kids(id),
                has_lease: true,
                in_stream: listed.map(|_| listed_info.is_some()),
                closed: listed_info.map(|s| s.ending_seq.is_some()),
                state: lease_state(l, &ended, heartbeats, listed.map(|_| listed_info.is_some())),
                millis_behind_latest: (l.checkpoint == Some(Checkpoint::ShardEnd)).then_some(0),
            }
        })
        .collect();
    let with_rows: BTreeSet<&str> = leases.iter().map(|l| l.shard.shard.as_str()).collect();
    for s in listed.unwrap_or_default() {
        if with_rows.contains(s.shard.as_str()) {
            continue;
        }
        out.push(ShardStatus {
            shard: s.shard.as_str().to_owned(),
            owner: None,
            owner_incarnation: None,
            token: 0,
            checkpoint: None,
            pending_owner: None,
            parents: s.parents.iter().map(|p| p.as_str().to_owned()).collect(),
            children: kids(s.shard.as_str()),
            has_lease: false,
            in_stream: Some(true),
            closed: Some(s.ending_seq.is_some()),
            state: "no lease".to_owned(),
            millis_behind_latest: None,
        });
    }
    out.sort_by(|a, b| a.shard.cmp(&b.shard));
    out
}

fn lease_state(
    l: &LeaseRow,
    ended: &BTreeSet<&str>,
    heartbeats: &[HeartbeatRow],
    in_stream: Option<bool>,
) -> String {
    let mut s = if l.checkpoint == Some(Checkpoint::ShardEnd) {
        "ended".to_owned()
    } else if let Some(o) = &l.owner {
        let mut s = if l.pending_owner.is_some() {
            "handing off".to_owned()
        } else {
            "held".to_owned()
        };
        match heartbeats.iter().find(|h| h.owner.worker == o.worker) {
            Some(h) if h.owner.incarnation != o.incarnation => s.push_str(", earlier incarnation"),
            Some(h) if !h.alive => s.push_str(", owner stopped"),
            None => s.push_str(", owner has no heartbeat"),
            Some(_) => {}
        }
        s
    } else if l.parents.iter().any(|p| !ended.contains(p.as_str())) {
        "waiting for parents".to_owned()
    } else {
        "free".to_owned()
    };
    if in_stream == Some(false) && l.checkpoint != Some(Checkpoint::ShardEnd) {
        s.push_str(", gone from the stream");
    }
    s
}

/// MillisBehindLatest from each checkpoint: GetShardIterator at the
/// checkpoint's resume position, then one GetRecords with Limit = 1.
async fn lag(
    kinesis: &Kinesis,
    stream: &StreamId,
    leases: &[LeaseRow],
    listed: &[ShardInfo],
    shards: &mut [ShardStatus],
    errors: &mut Vec<String>,
) {
    let info: BTreeMap<&str, &ShardInfo> = listed.iter().map(|s| (s.shard.as_str(), s)).collect();
    let mut tasks = tokio::task::JoinSet::new();
    for l in leases {
        let (Some(pos), Some(i)) = (
            l.checkpoint.as_ref().and_then(Checkpoint::resume_position),
            info.get(l.shard.shard.as_str()),
        ) else {
            continue;
        };
        let kinesis = kinesis.clone();
        let shard = ShardRef {
            stream: stream.clone(),
            shard: l.shard.shard.clone(),
        };
        let range = i.hash_range;
        tasks.spawn(async move {
            let r = async {
                let it = kinesis.get_shard_iterator(&shard, &pos).await?;
                let (chunk, _, _) = kinesis.get_records(&shard, &it, 1, range, None).await?;
                Ok::<_, kinesin_aws::KinesisError>(chunk.millis_behind)
            }
            .await;
            (shard.shard, r)
        });
    }
    while let Some(joined) = tasks.join_next().await {
        let Ok((shard, r)) = joined else { continue };
        match r {
            Ok(ms) => {
                if let Some(s) = shards.iter_mut().find(|s| s.shard == shard.as_str()) {
                    s.millis_behind_latest = Some(ms);
                }
            }
            Err(e) => errors.push(format!("lag of {stream} {shard}: {e}")),
        }
    }
}

fn print(snap: &Snapshot, json: bool, clear: bool) -> Result<()> {
    let mut out = String::new();
    if json {
        out = serde_json::to_string(snap).context("encoding the status as JSON")?;
        out.push('\n');
    } else {
        if clear {
            out.push_str("\x1b[H\x1b[2J");
        }
        render(snap, &mut out);
    }
    let mut stdout = std::io::stdout().lock();
    stdout.write_all(out.as_bytes())?;
    stdout.flush()?;
    Ok(())
}

/// The text view: a table of shards per stream, then a table of workers.
pub fn render(snap: &Snapshot, out: &mut String) {
    let mut rows = Vec::new();
    for st in &snap.streams {
        let name = st
            .stream
            .rsplit_once(":stream/")
            .map(|(_, n)| n)
            .unwrap_or(&st.stream);
        for s in &st.shards {
            let dash = || "-".to_owned();
            let list = |v: &[String]| if v.is_empty() { dash() } else { v.join(",") };
            rows.push([
                name.to_owned(),
                s.shard.clone(),
                s.owner.clone().unwrap_or_else(dash),
                if s.has_lease {
                    s.token.to_string()
                } else {
                    dash()
                },
                s.checkpoint.clone().unwrap_or_else(dash),
                list(&s.parents),
                list(&s.children),
                s.millis_behind_latest.map(fmt_ms).unwrap_or_else(dash),
                match &s.pending_owner {
                    Some(p) => format!("{}, to {p}", s.state),
                    None => s.state.clone(),
                },
            ]);
        }
    }
    table(
        out,
        [
            "STREAM",
            "SHARD",
            "OWNER",
            "TOKEN",
            "CHECKPOINT",
            "PARENTS",
            "CHILDREN",
            "LAG",
            "STATE",
        ],
        &rows,
    );
    out.push('\n');
    let rows: Vec<[String; 5]> = snap
        .workers
        .iter()
        .map(|w| {
            [
                w.worker.clone(),
                w.incarnation.to_string(),
                w.leases.to_string(),
                match (w.heartbeat_age_ms, w.unchanged_for_ms) {
                    (Some(ms), _) => format!("<= {}", fmt_ms(ms)),
                    (None, Some(ms)) => format!("no beat for {}", fmt_ms(ms)),
                    (None, None) => "-".to_owned(),
                },
                if w.alive { "alive" } else { "stopped" }.to_owned(),
            ]
        })
        .collect();
    table(
        out,
        ["WORKER", "INCARNATION", "LEASES", "HEARTBEAT", "STATE"],
        &rows,
    );
    for b in &snap.bad_rows {
        let _ = writeln!(out, "bad row: {}", term_safe(b));
    }
    for e in &snap.errors {
        let _ = writeln!(out, "error: {}", term_safe(e));
    }
}

fn table<const N: usize>(out: &mut String, header: [&str; N], rows: &[[String; N]]) {
    let rows: Vec<[Cow<'_, str>; N]> = rows
        .iter()
        .map(|r| std::array::from_fn(|i| term_safe(&r[i])))
        .collect();
    let mut widths = header.map(|h| h.chars().count());
    for r in &rows {
        for (w, c) in widths.iter_mut().zip(r) {
            *w = (*w).max(c.chars().count());
        }
    }
    let mut line = |cells: [&str; N]| {
        let mut s = String::new();
        for (i, (c, w)) in cells.iter().zip(widths).enumerate() {
            if i + 1 == N {
                s.push_str(c);
            } else {
                let _ = write!(s, "{c:<w$}  ");
            }
        }
        out.push_str(s.trim_end());
        out.push('\n');
    };
    line(header);
    for r in &rows {
        line(std::array::from_fn(|i| r[i].as_ref()));
    }
}

fn fmt_ms(ms: u64) -> String {
    if ms < 1000 {
        format!("{ms} ms")
    } else {
        format!("{:.1} s", ms as f64 / 1000.0)
    }
}

/// `s` made safe to print on a terminal: control characters (C0, DEL,
/// C1: escape sequences, carriage returns, backspaces) and the Unicode
/// bidirectional controls (which reorder what follows them) become
/// `\u{..}` escapes, and so does a backslash, so an escaped value cannot be
/// confused with one that contains the escape text.
pub fn term_safe(s: &str) -> Cow<'_, str> {
    let unsafe_char = |c: char| {
        c == '\\'
            || c.is_control()
            || matches!(c, '\u{200E}' | '\u{200F}' | '\u{061C}')
            || ('\u{202A}'..='\u{202E}').contains(&c)
            || ('\u{2066}'..='\u{2069}').contains(&c)
    };
    if !s.chars().any(unsafe_char) {
        return Cow::Borrowed(s);
    }
    let mut out = String::with_capacity(s.len() + 8);
    for c in s.chars() {
        if c == '\\' {
            out.push_str("\\\\");
        } else if unsafe_char(c) {
            let _ = write!(out, "\\u{{{:x}}}", c as u32);
        } else {
            out.push(c);
        }
    }
    Cow::Owned(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use kinesin_core::ids::{FencingToken, Owner, ShardId};

    #[test]
    fn terminal_controls_in_table_values_are_escaped() {
        assert_eq!(term_safe("worker-1"), "worker-1");
        assert!(matches!(term_safe("shardId-000"), Cow::Borrowed(_)));
        assert_eq!(term_safe("a\x1b[2Jb"), "a\\u{1b}[2Jb");
        assert_eq!(term_safe("x\ry"), "x\\u{d}y");
        assert_eq!(term_safe("\u{9b}31m"), "\\u{9b}31m");
        assert_eq!(term_safe("ab\u{202E}cd"), "ab\\u{202e}cd");
        assert_eq!(term_safe("a\\u{1b}"), "a\\\\u{1b}");
        assert_eq!(term_safe("größe"), "größe");
    }

    #[test]
    fn a_rendered_table_holds_no_escape_character_from_a_row() {
        let snap = Snapshot {
            lease_table: "t".into(),
            streams: vec![StreamStatus {
                stream: "arn:aws:kinesis:r:1:stream/s".into(),
                shards: vec![ShardStatus {
                    shard: "shardId-0".into(),
                    owner: Some("evil\x1b]0;pwned\x07".into()),
                    owner_incarnation: Some(1),
                    token: 3,
                    checkpoint: Some("49".into()),
                    pending_owner: None,
                    parents: vec![],
                    children: vec![],
                    has_lease: true,
                    in_stream: Some(true),
                    closed: Some(false),
                    state: "held".into(),
                    millis_behind_latest: Some(1500),
                }],
            }],
            workers: vec![WorkerStatus {
                worker: "evil\x1b]0;pwned\x07".into(),
                incarnation: 1,
                alive: true,
                beat: 4,
                heartbeat_age_ms: Some(900),
                unchanged_for_ms: None,
                leases: 1,
                leases_reported: 1,
                wants: 0,
            }],
            bad_rows: vec!["row \x1b[31m".into()],
            errors: vec![],
        };
        let mut out = String::new();
        render(&snap, &mut out);
        assert!(!out.contains('\x1b') && !out.contains('\x07'), "{out:?}");
        assert!(out.contains("evil\\u{1b}]0;pwned\\u{7}"), "{out}");
        assert!(out.contains("1.5 s"), "{out}");
        assert!(out.contains("<= 900 ms"), "{out}");
    }

    fn hb(worker: &str, beat: u64) -> HeartbeatRow {
        HeartbeatRow {
            owner: Owner {
                worker: worker.into(),
                incarnation: 7,
            },
            beat,
            held: 0,
            wants: vec![],
            alive: true,
            streams: vec![],
        }
    }

    #[test]
    fn heartbeat_age_is_bounded_by_the_reads_that_saw_the_beat_change() {
        let t0 = Instant::now();
        let mut b = BeatTracker::default();
        b.observe(&[hb("a", 1), hb("b", 5)], t0);
        // One read: nothing seen to change, unchanged since the read.
        assert_eq!(
            b.age("a", 7, t0 + Duration::from_secs(1)),
            (None, Some(1000))
        );
        b.observe(&[hb("a", 2), hb("b", 5)], t0 + Duration::from_secs(4));
        let now = t0 + Duration::from_secs(5);
        // a beat between t0 and t0+4: at most 5 s ago.
        assert_eq!(b.age("a", 7, now), (Some(5000), None));
        // b did not beat in 5 s.
        assert_eq!(b.age("b", 7, now), (None, Some(5000)));
        // An unknown incarnation has no age.
        assert_eq!(b.age("a", 8, now), (None, None));
    }

    #[test]
    fn shards_join_lease_rows_with_list_shards_and_name_children() {
        let stream = StreamId::new("arn:aws:kinesis:r:1:stream/s");
        let sref = |s: &str| ShardRef {
            stream: stream.clone(),
            shard: ShardId::new(s),
        };
        let mut parent = LeaseRow::new(sref("shardId-0"), vec![], 0);
        parent.checkpoint = Some(Checkpoint::ShardEnd);
        parent.token = FencingToken(4);
        let mut child = LeaseRow::new(sref("shardId-1"), vec![ShardId::new("shardId-0")], 0);
        child.owner = Some(Owner {
            worker: "w1".into(),
            incarnation: 7,
        });
        let waiting = LeaseRow::new(sref("shardId-3"), vec![ShardId::new("shardId-1")], 0);
        let info = |s: &str, parents: &[&str]| ShardInfo {
            shard: ShardId::new(s),
            parents: parents.iter().map(|p| ShardId::new(*p)).collect(),
            hash_range: kinesin_core::kpl::HashRange { start: 0, end: 1 },
            ending_seq: None,
            starting_seq: None,
        };
        let listed = vec![
            info("shardId-1", &["shardId-0"]),
            info("shardId-2", &["shardId-0"]),
            info("shardId-3", &["shardId-1"]),
        ];
        let v = shard_view(&[parent, child, waiting], Some(&listed), &[hb("w1", 1)]);
        let by: BTreeMap<&str, &ShardStatus> = v.iter().map(|s| (s.shard.as_str(), s)).collect();
        assert_eq!(by["shardId-0"].state, "ended");
        assert_eq!(by["shardId-0"].children, ["shardId-1", "shardId-2"]);
        assert_eq!(by["shardId-0"].millis_behind_latest, Some(0));
        assert_eq!(by["shardId-0"].in_stream, Some(false));
        assert_eq!(by["shardId-1"].state, "held");
        assert_eq!(by["shardId-1"].owner.as_deref(), Some("w1"));
        assert_eq!(by["shardId-2"].state, "no lease");
        assert!(!by["shardId-2"].has_lease);
        assert_eq!(by["shardId-3"].state, "waiting for parents");
    }
}

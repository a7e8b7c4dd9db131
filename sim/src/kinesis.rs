//! Simulated Kinesis Data Streams: one or more streams, their shards and
//! records, EFO consumers and subscriptions, and shard iterators.
//!
//! AWS rules encoded (SPEC section 1):
//! - Shard ids count the shards of their stream (`shardId-000000000000`
//!   first in every stream); a consumer is registered to one stream; a
//!   merge joins two adjacent shards of one stream.
//! - Sequence numbers are 56-digit decimal strings, increasing within a
//!   shard (and across a reshard: children's are above their parents').
//! - A split closes the parent (EndingSequenceNumber set) and opens two
//!   children over its halves; a merge closes two adjacent parents and
//!   opens one child. Children name their parents.
//! - Records older than the retention period are trimmed; a position inside
//!   the trimmed part is InvalidArgument; TRIM_HORIZON starts after it.
//! - A sequence number from another shard is InvalidArgument.
//! - RegisterStreamConsumer: CREATING, ACTIVE after a delay; a second
//!   registration of the name is ResourceInUse.
//! - SubscribeToShard: at most 1 call/s per (consumer, shard)
//!   (LimitExceeded), ResourceInUse within 5 s of a successful call, both
//!   across the whole fleet (any process's call counts; refusals are
//!   counted as caused by the caller's own incarnation or by another); a call
//!   after that takes the subscription over (the old one fails with
//!   ResourceInUse); a subscription ends normally after 5 minutes. Events
//!   come when records arrive or about once a second, each carrying the
//!   ContinuationSequenceNumber; the last one of a closed shard carries a
//!   null continuation and the ChildShards. With `empty_first_event`, every
//!   subscription opens with an event without records whose continuation
//!   is the record before its starting point (behind an AT_SEQUENCE start).
//!   With `ragged_events`, two events in three hold only 1 to 3 Kinesis
//!   records although more are available (so a closed shard's event may
//!   hold nothing a consumer keeps, with a continuation before its end).
//! - GetShardIterator / GetRecords: an iterator expires 5 minutes after it
//!   was issued; at most 5 GetRecords/s per shard (Throttled); at the end of
//!   a closed shard the response has no NextShardIterator and names the
//!   ChildShards. With `empty_get_records`, some responses carry no records
//!   although records follow (NextShardIterator at the same place). An
//!   answer holds at most `Limit` records and 10 MiB (at least one record).
//!
//! This module decides what the service answers; latency, errors injected
//! at random and partitions are [`crate::net`]'s, record de-aggregation
//! the world's.
//!
//! Invariants: records of a shard are in increasing sequence order and are
//! only appended while the shard is open; `trimmed` only grows.

use std::collections::{BTreeMap, VecDeque};

use kinesin_core::ids::{ShardId, ShardRef, StreamId};
use kinesin_core::io::{
    ChildShard, ConsumerInfo, ConsumerStatus, ErrorClass, ShardInfo, ShardIterator,
};
use kinesin_core::kpl::HashRange;
use kinesin_core::sequence::{SeqNum, StartPosition};

use crate::sched::{Micros, MS, SEC};

/// Subscriptions end normally after this long (AWS).
pub const SUBSCRIPTION_LIFETIME: Micros = 300 * SEC;
/// Shard iterators expire after this long (AWS).
pub const ITERATOR_LIFETIME: Micros = 300 * SEC;
/// SubscribeToShard: at most one call per second per (consumer, shard).
pub const SUBSCRIBE_SPACING: Micros = SEC;
/// SubscribeToShard: ResourceInUse within this long of a successful call.
pub const SUBSCRIBE_TAKEOVER: Micros = 5 * SEC;
/// GetRecords: calls per second per shard.
pub const GET_RECORDS_PER_SEC: usize = 5;
/// GetRecords: an answer holds at most this many bytes (data and partition
/// keys), and at least one record (AWS: 10 MiB). EFO events are held to
/// the same (AWS publishes no event size; it pushes 2 MB/s per shard).
pub const GET_RECORDS_BYTES_MAX: u64 = 10 << 20;

/// One Kinesis record as stored: its data (a plain user record or a KPL
/// aggregate) and, for the oracles, the ids of the user records inside.
#[derive(Clone, Debug)]
pub struct KRecord {
    /// Sequence number.
    pub seq: SeqNum,
    /// The numeric part that orders sequence numbers (for searches).
    pub ord: u64,
    /// ApproximateArrivalTimestamp (unix ms).
    pub arrival_ms: u64,
    /// Partition key of the Kinesis record.
    pub partition_key: String,
    /// The record's data.
    pub data: Vec<u8>,
    /// Bytes of data after `data` that the simulation counts but does not
    /// store (zeros: a large record at the cost of a small one).
    pub pad: u32,
}

impl KRecord {
    /// Its size on the wire: data (with padding) and partition key.
    pub fn wire_bytes(&self) -> u64 {
        (self.data.len() + self.partition_key.len()) as u64 + u64::from(self.pad)
    }
}

/// One shard.
#[derive(Clone, Debug)]
pub struct Shard {
    /// ShardId (`shardId-{n}`, `n` counting the shards of its stream).
    pub id: ShardId,
    /// The stream (index into [`Kinesis::streams`]).
    pub stream: usize,
    /// Its stream was deleted (and perhaps recreated under the same name:
    /// its ShardId then names a shard of the new stream): every read of it
    /// is ResourceNotFound.
    pub deleted: bool,
    /// Parent shard ids.
    pub parents: Vec<usize>,
    /// Children (set when closed).
    pub children: Vec<usize>,
    /// HashKeyRange.
    pub range: HashRange,
    /// StartingSequenceNumber (no record carries it).
    pub starting: SeqNum,
    /// EndingSequenceNumber, once closed.
    pub ending: Option<SeqNum>,
    /// Records, including trimmed ones (kept for the oracles).
    pub records: Vec<KRecord>,
    /// Records before this index have left retention.
    pub trimmed: usize,
    /// When it was closed.
    pub closed_at: Option<Micros>,
    /// Recent GetRecords call times (throttling).
    get_records_calls: VecDeque<Micros>,
    /// GetRecords calls answered (empty responses are drawn from it).
    get_records_total: u64,
}

impl Shard {
    /// The end of an answer starting at record `from` and holding at most
    /// the records up to `most`: at most [`GET_RECORDS_BYTES_MAX`] bytes,
    /// and at least one record.
    pub fn end_within(&self, from: usize, most: usize) -> usize {
        let mut bytes = 0u64;
        let mut to = from;
        while to < most {
            bytes += self.records[to].wire_bytes();
            if to > from && bytes > GET_RECORDS_BYTES_MAX {
                break;
            }
            to += 1;
        }
        to
    }

    /// Whether the shard is still open for writes.
    pub fn is_open(&self) -> bool {
        self.ending.is_none()
    }
}

/// An EFO consumer.
#[derive(Clone, Debug)]
pub struct Consumer {
    /// ConsumerARN.
    pub arn: String,
    /// When it becomes ACTIVE.
    pub active_at: Micros,
}

/// Who a subscription belongs to: (process index, incarnation, raw SubId).
pub type SubKey = (usize, u64, u64);

/// An open subscription.
#[derive(Clone, Debug)]
pub struct Subscription {
    /// Consumer ARN.
    pub arn: String,
    /// Shard index.
    pub shard: usize,
    /// Next record to send.
    pub cursor: usize,
    /// The starting position (records it does not admit are left out).
    pub position: StartPosition,
    /// Subscribed at.
    pub started: Micros,
    /// When the last event was sent.
    pub last_event: Option<Micros>,
    /// Outstanding Pull.
    pub pending: Option<kinesin_core::ids::ChunkId>,
    /// Taken over by a later subscription: the next read fails.
    pub taken_over: bool,
    /// Ended, failed, cancelled or at shard end: nothing more is sent.
    pub done: bool,
    /// Wake-up generation (stale wake-ups are ignored).
    pub wake_gen: u64,
}

/// What answering a pending Pull produced.
#[derive(Clone, Debug)]
pub enum PullAnswer {
    /// An event: records `from..to` of the shard, continuation, children.
    Event {
        /// The Pull's chunk.
        chunk: kinesin_core::ids::ChunkId,
        /// First record index.
        from: usize,
        /// End record index (exclusive).
        to: usize,
        /// ContinuationSequenceNumber (None = shard end).
        continuation: Option<SeqNum>,
        /// ChildShards.
        children: Vec<ChildShard>,
        /// MillisBehindLatest.
        millis_behind: u64,
    },
    /// Normal end after 5 minutes.
    Ended,
    /// Taken over by another subscription.
    TakenOver,
    /// The shard's stream was deleted (ResourceNotFound).
    Gone,
    /// Not yet: wake up again at this time.
    Later(Micros),
}

/// Records a GetRecords call returns.
#[derive(Clone, Debug)]
pub struct RecordsAnswer {
    /// Shard index.
    pub shard: usize,
    /// First record index.
    pub from: usize,
    /// End record index (exclusive).
    pub to: usize,
    /// NextShardIterator (None = shard end).
    pub next: Option<ShardIterator>,
    /// ChildShards at shard end.
    pub children: Vec<ChildShard>,
    /// MillisBehindLatest.
    pub millis_behind: u64,
}

/// The simulated service: one or more streams.
pub struct Kinesis {
    /// The streams, by index.
    pub streams: Vec<StreamId>,
    /// Per stream, its shards' indices into `shards` in creation order
    /// (the `n` of `shardId-{n}`).
    pub stream_shards: Vec<Vec<usize>>,
    /// Every shard ever created, of every stream, by (global) index.
    pub shards: Vec<Shard>,
    /// Registered consumers by (stream index, name).
    pub consumers: BTreeMap<(usize, String), Consumer>,
    /// Subscriptions by owner key.
    pub subs: BTreeMap<SubKey, Subscription>,
    /// Last SubscribeToShard call per (consumer, shard).
    last_call: BTreeMap<(String, usize), (Micros, SubKey)>,
    /// Last successful SubscribeToShard per (consumer, shard).
    last_ok: BTreeMap<(String, usize), (Micros, SubKey)>,
    /// Next sequence counter.
    next_ord: u64,
    /// Retention period.
    pub retention: Micros,
    /// Unix ms at true time 0.
    pub unix_base_ms: u64,
    /// Max Kinesis records per EFO event.
    pub max_event_records: usize,
    /// Interval of events on an idle subscription.
    pub idle_event_interval: Micros,
    /// The first event of every subscription carries no records, with the
    /// continuation of the record before the starting point (as a real
    /// stream may answer: the position then must not move back).
    pub empty_first_event: bool,
    /// Every third GetRecords call returns no records, with a
    /// NextShardIterator at the same place (MillisBehindLatest as usual),
    /// as the service may when the iterator points at a stretch of the
    /// shard without data.
    pub empty_get_records: bool,
    /// Two EFO events in three hold only 1 to 3 Kinesis records although
    /// more are available (AWS pushes records as they arrive; an event is
    /// no whole backlog).
    pub ragged_events: bool,
    /// EFO events answered (the ragged ones are drawn from it).
    events_answered: u64,
    /// SubscribeToShard calls that reached the service.
    pub subscribe_calls: u64,
    /// SubscribeToShard calls refused (LimitExceeded, ResourceInUse) by a
    /// call of the same process incarnation.
    pub subscribe_refused_own: u64,
    /// ... by a call of another process or incarnation (the fleet-wide
    /// rule, which no worker can see).
    pub subscribe_refused_fleet: u64,
    /// GetRecords calls that reached the service.
    pub get_records_calls: u64,
}

fn shard_id(n: usize) -> ShardId {
    ShardId::new(format!("shardId-{n:012}"))
}

/// The `n` of a ShardId `shardId-{n}` of this simulator.
fn shard_number(id: &ShardId) -> Option<usize> {
    id.as_str().strip_prefix("shardId-")?.parse().ok()
}

/// `49{ord:030}{shard:024}` (built by hand: one per record produced).
fn seq_of(ord: u64, shard: usize) -> SeqNum {
    let mut digits = [b'0'; 56];
    digits[0] = b'4';
    digits[1] = b'9';
    fill_decimal(&mut digits[2..32], ord);
    fill_decimal(&mut digits[32..], shard as u64);
    let s = std::str::from_utf8(&digits).expect("ASCII digits");
    SeqNum::parse(s).expect("56 decimal digits")
}

/// Right-align `n` in `out` (already zero-filled).
fn fill_decimal(out: &mut [u8], mut n: u64) {
    for d in out.iter_mut().rev() {
        *d = b'0' + (n % 10) as u8;
        n /= 10;
        if n == 0 {
            break;
        }
    }
}

/// (ord, shard index) of a sequence number minted here.
fn seq_parts(seq: &SeqNum) -> Option<(u64, usize)> {
    let s = seq.as_str();
    if s.len() != 56 || !s.starts_with("49") {
        return None;
    }
    Some((s[2..32].parse().ok()?, s[32..].parse().ok()?))
}

impl Kinesis {
    /// A stream with `shards` open shards splitting the hash key space evenly.
    pub fn new(stream: StreamId, shards: usize, retention: Micros, unix_base_ms: u64) -> Self {
        let mut k = Kinesis {
            streams: Vec::new(),
            stream_shards: Vec::new(),
            shards: Vec::new(),
            consumers: BTreeMap::new(),
            subs: BTreeMap::new(),
            last_call: BTreeMap::new(),
            last_ok: BTreeMap::new(),
            next_ord: 1_000,
            retention,
            unix_base_ms,
            max_event_records: 500,
            idle_event_interval: SEC,
            empty_first_event: false,
            empty_get_records: false,
            ragged_events: false,
            events_answered: 0,
            subscribe_calls: 0,
            subscribe_refused_own: 0,
            subscribe_refused_fleet: 0,
            get_records_calls: 0,
        };
        k.add_stream(stream, shards);
        k
    }

    /// Another stream with `shards` open shards splitting the hash key
    /// space evenly. Returns its index.
    pub fn add_stream(&mut self, stream: StreamId, shards: usize) -> usize {
        let s = self.streams.len();
        self.streams.push(stream);
        self.stream_shards.push(Vec::new());
        self.open_even_shards(s, shards);
        s
    }

    /// Open `shards` (at least one) shards of stream `stream` splitting the
    /// hash key space evenly, in key order.
    fn open_even_shards(&mut self, stream: usize, shards: usize) {
        let n = shards.max(1) as u128;
        let width = u128::MAX / n;
        for i in 0..n {
            let start = i * width;
            let end = if i + 1 == n {
                u128::MAX
            } else {
                (i + 1) * width - 1
            };
            self.add_shard(stream, Vec::new(), HashRange { start, end });
        }
    }

    fn add_shard(&mut self, stream: usize, parents: Vec<usize>, range: HashRange) -> usize {
        let index = self.shards.len();
        let n = self.stream_shards[stream].len();
        self.stream_shards[stream].push(index);
        self.next_ord += 7;
        self.shards.push(Shard {
            id: shard_id(n),
            stream,
            deleted: false,
            parents,
            children: Vec::new(),
            range,
            starting: seq_of(self.next_ord, index),
            ending: None,
            records: Vec::new(),
            trimmed: 0,
            closed_at: None,
            get_records_calls: VecDeque::new(),
            get_records_total: 0,
        });
        index
    }

    /// The ShardRef of shard `index`.
    pub fn shard_ref(&self, index: usize) -> ShardRef {
        let s = &self.shards[index];
        ShardRef::new(self.streams[s.stream].clone(), s.id.clone())
    }

    /// The index of the shard a ShardRef names, if it exists.
    pub fn index_of(&self, shard: &ShardRef) -> Option<usize> {
        let s = self.streams.iter().position(|id| *id == shard.stream)?;
        let n = shard_number(&shard.shard)?;
        self.stream_shards[s].get(n).copied()
    }

    /// DeleteStream then CreateStream under the same name (the same ARN):
    /// every shard of the stream is deleted (reads of it fail with
    /// ResourceNotFound, its subscriptions end with it) and the new stream
    /// opens `shards` shards named from `shardId-000000000000` again. Its
    /// consumers are kept (a simplification: AWS deletes them with the
    /// stream). Returns the deleted shards.
    pub fn recreate_stream(&mut self, stream: usize, shards: usize, now: Micros) -> Vec<usize> {
        let old = std::mem::take(&mut self.stream_shards[stream]);
        for &i in &old {
            if self.shards[i].is_open() {
                self.close(i, now);
            }
            self.shards[i].deleted = true;
        }
        self.open_even_shards(stream, shards);
        old
    }

    /// The index of a stream, if it exists.
    pub fn stream_index(&self, stream: &StreamId) -> Option<usize> {
        self.streams.iter().position(|id| id == stream)
    }

    /// The open shard of stream `stream` whose range holds `hash_key`.
    pub fn route(&self, stream: usize, hash_key: u128) -> usize {
        self.stream_shards[stream]
            .iter()
            .copied()
            .find(|&i| self.shards[i].is_open() && self.shards[i].range.contains(hash_key))
            .expect("open shards cover the hash key space")
    }

    /// Append a record to an open shard; `gap` spaces sequence numbers.
    pub fn put(
        &mut self,
        shard: usize,
        partition_key: String,
        data: Vec<u8>,
        now: Micros,
        gap: u64,
    ) -> usize {
        self.next_ord += 1 + gap;
        let rec = KRecord {
            seq: seq_of(self.next_ord, shard),
            ord: self.next_ord,
            arrival_ms: self.unix_base_ms + now / MS,
            partition_key,
            data,
            pad: 0,
        };
        let s = &mut self.shards[shard];
        debug_assert!(s.is_open());
        s.records.push(rec);
        s.records.len() - 1
    }

    fn close(&mut self, shard: usize, now: Micros) {
        self.next_ord += 3;
        let s = &mut self.shards[shard];
        s.ending = Some(seq_of(self.next_ord, shard));
        s.closed_at = Some(now);
    }

    /// Split an open shard into two halves. Returns the children.
    pub fn split(&mut self, shard: usize, now: Micros) -> Option<[usize; 2]> {
        let s = &self.shards[shard];
        if !s.is_open() || s.range.end - s.range.start < 2 {
            return None;
        }
        let (range, stream) = (s.range, s.stream);
        let mid = range.start + (range.end - range.start) / 2;
        self.close(shard, now);
        let a = self.add_shard(
            stream,
            vec![shard],
            HashRange {
                start: range.start,
                end: mid,
            },
        );
        let b = self.add_shard(
            stream,
            vec![shard],
            HashRange {
                start: mid + 1,
                end: range.end,
            },
        );
        self.shards[shard].children = vec![a, b];
        Some([a, b])
    }

    /// Merge two adjacent open shards. Returns the child.
    pub fn merge(&mut self, left: usize, right: usize, now: Micros) -> Option<usize> {
        let (l, r) = (&self.shards[left], &self.shards[right]);
        if !l.is_open()
            || !r.is_open()
            || l.stream != r.stream
            || l.range.end.checked_add(1) != Some(r.range.start)
        {
            return None;
        }
        let stream = l.stream;
        let range = HashRange {
            start: l.range.start,
            end: r.range.end,
        };
        self.close(left, now);
        self.close(right, now);
        let c = self.add_shard(stream, vec![left, right], range);
        self.shards[left].children = vec![c];
        self.shards[right].children = vec![c];
        Some(c)
    }

    /// Pairs of adjacent open shards of one stream (merge candidates), by
    /// stream and in hash order.
    pub fn adjacent_open(&self) -> Vec<(usize, usize)> {
        let mut open: Vec<usize> = (0..self.shards.len())
            .filter(|&i| self.shards[i].is_open())
            .collect();
        open.sort_by_key(|&i| (self.shards[i].stream, self.shards[i].range.start));
        open.windows(2)
            .filter(|w| {
                let (l, r) = (&self.shards[w[0]], &self.shards[w[1]]);
                l.stream == r.stream && l.range.end.checked_add(1) == Some(r.range.start)
            })
            .map(|w| (w[0], w[1]))
            .collect()
    }

    /// Trim records older than the retention period. Returns, per shard,
    /// the index ranges that left retention.
    pub fn trim(&mut self, now: Micros) -> Vec<(usize, std::ops::Range<usize>)> {
        let Some(horizon) = now.checked_sub(self.retention) else {
            return Vec::new();
        };
        let horizon_ms = self.unix_base_ms + horizon / MS;
        let mut out = Vec::new();
        for (i, s) in self.shards.iter_mut().enumerate() {
            let from = s.trimmed;
            while s.trimmed < s.records.len() && s.records[s.trimmed].arrival_ms < horizon_ms {
                s.trimmed += 1;
            }
            if s.trimmed > from {
                out.push((i, from..s.trimmed));
            }
        }
        out
    }

    fn shard_expired(&self, shard: usize, now: Micros) -> bool {
        self.shards[shard].deleted
            || self.shards[shard]
                .closed_at
                .is_some_and(|c| now >= c + self.retention)
    }

    fn lookup(&self, shard: &ShardRef) -> Result<usize, ErrorClass> {
        self.index_of(shard).ok_or(ErrorClass::ResourceNotFound)
    }

    fn children_of(&self, shard: usize) -> Vec<ChildShard> {
        self.shards[shard]
            .children
            .iter()
            .map(|&c| ChildShard {
                shard: self.shards[c].id.clone(),
                parents: self.shards[c]
                    .parents
                    .iter()
                    .map(|&p| self.shards[p].id.clone())
                    .collect(),
                hash_range: self.shards[c].range,
            })
            .collect()
    }

    /// ListShards of stream `stream` (every page).
    pub fn list_shards(&self, stream: usize, now: Micros) -> Vec<ShardInfo> {
        self.stream_shards[stream]
            .iter()
            .copied()
            .filter(|&i| !self.shard_expired(i, now))
            .map(|i| {
                let s = &self.shards[i];
                ShardInfo {
                    shard: s.id.clone(),
                    parents: s
                        .parents
                        .iter()
                        .map(|&p| self.shards[p].id.clone())
                        .collect(),
                    hash_range: s.range,
                    ending_seq: s.ending.clone(),
                    starting_seq: Some(s.starting.clone()),
                }
            })
            .collect()
    }

    /// Resolve a starting position to a record index.
    pub fn resolve(&self, shard: usize, position: &StartPosition) -> Result<usize, ErrorClass> {
        let s = &self.shards[shard];
        let check = |seq: &SeqNum| -> Result<u64, ErrorClass> {
            let (ord, owner) = seq_parts(seq).ok_or(ErrorClass::InvalidArgument)?;
            if owner != shard {
                return Err(ErrorClass::InvalidArgument);
            }
            if s.trimmed > 0 && ord < s.records[s.trimmed - 1].ord {
                // Inside the trimmed part: past retention.
                return Err(ErrorClass::InvalidArgument);
            }
            Ok(ord)
        };
        let idx = match position {
            StartPosition::TrimHorizon => s.trimmed,
            StartPosition::Latest => s.records.len(),
            StartPosition::AtTimestamp { unix_ms } => {
                s.records.partition_point(|r| r.arrival_ms < *unix_ms)
            }
            StartPosition::AtSequence(seq) => {
                let ord = check(seq)?;
                s.records.partition_point(|r| r.ord < ord)
            }
            StartPosition::AtSubSequence(ext) => {
                let ord = check(&ext.seq)?;
                s.records.partition_point(|r| r.ord < ord)
            }
            StartPosition::AfterSequence(seq) => {
                let ord = check(seq)?;
                s.records.partition_point(|r| r.ord <= ord)
            }
        };
        Ok(idx.max(s.trimmed))
    }

    fn seq_before(&self, shard: usize, cursor: usize) -> SeqNum {
        let s = &self.shards[shard];
        match cursor.checked_sub(1) {
            Some(i) => s.records[i].seq.clone(),
            None => s.starting.clone(),
        }
    }

    fn millis_behind(&self, shard: usize, to: usize, now: Micros) -> u64 {
        let s = &self.shards[shard];
        if to >= s.records.len() || to == 0 {
            return 0;
        }
        (self.unix_base_ms + now / MS).saturating_sub(s.records[to - 1].arrival_ms)
    }

    // ----- EFO --------------------------------------------------------------

    /// RegisterStreamConsumer.
    pub fn register_consumer(
        &mut self,
        stream: &StreamId,
        name: &str,
        now: Micros,
        delay: Micros,
    ) -> Result<ConsumerInfo, ErrorClass> {
        let s = self
            .stream_index(stream)
            .ok_or(ErrorClass::ResourceNotFound)?;
        let key = (s, name.to_owned());
        if self.consumers.contains_key(&key) {
            return Err(ErrorClass::ResourceInUse);
        }
        let arn = format!(
            "{}/consumer/{}:{}",
            stream.as_str(),
            name,
            self.unix_base_ms / 1000
        );
        self.consumers.insert(
            key,
            Consumer {
                arn: arn.clone(),
                active_at: now + delay,
            },
        );
        Ok(ConsumerInfo {
            arn,
            status: ConsumerStatus::Creating,
        })
    }

    /// DescribeStreamConsumer by name or ARN.
    pub fn describe_consumer(
        &self,
        stream: &StreamId,
        name: &str,
        arn: Option<&str>,
        now: Micros,
    ) -> Result<ConsumerInfo, ErrorClass> {
        let s = self
            .stream_index(stream)
            .ok_or(ErrorClass::ResourceNotFound)?;
        let c = match arn {
            Some(arn) => self.consumers.values().find(|c| c.arn == arn),
            None => self.consumers.get(&(s, name.to_owned())),
        }
        .ok_or(ErrorClass::ResourceNotFound)?;
        Ok(ConsumerInfo {
            arn: c.arn.clone(),
            status: if now >= c.active_at {
                ConsumerStatus::Active
            } else {
                ConsumerStatus::Creating
            },
        })
    }

    /// SubscribeToShard. On success the subscription exists; events come
    /// in answer to Pulls.
    pub fn subscribe(
        &mut self,
        key: SubKey,
        shard: &ShardRef,
        arn: &str,
        position: &StartPosition,
        now: Micros,
    ) -> Result<(), ErrorClass> {
        self.subscribe_calls += 1;
        let consumer = self
            .consumers
            .values()
            .find(|c| c.arn == arn)
            .ok_or(ErrorClass::ResourceNotFound)?;
        if now < consumer.active_at {
            return Err(ErrorClass::ResourceInUse);
        }
        let index = self.lookup(shard)?;
        if self.shard_expired(index, now) {
            return Err(ErrorClass::ResourceNotFound);
        }
        let pair = (arn.to_owned(), index);
        // The rules are per (consumer, shard) across the whole fleet: the
        // call that blocks this one may be another process's.
        let same = |other: &SubKey| (other.0, other.1) == (key.0, key.1);
        let previous = self.last_call.insert(pair.clone(), (now, key));
        if let Some((at, by)) = previous {
            if now < at + SUBSCRIBE_SPACING {
                self.count_refused(same(&by));
                return Err(ErrorClass::LimitExceeded);
            }
        }
        if let Some(&(at, by)) = self.last_ok.get(&pair) {
            if now < at + SUBSCRIBE_TAKEOVER {
                self.count_refused(same(&by));
                return Err(ErrorClass::ResourceInUse);
            }
        }
        let cursor = self.resolve(index, position)?;
        if let Some((_, old)) = self.last_ok.insert(pair, (now, key)) {
            if let Some(sub) = self.subs.get_mut(&old) {
                if !sub.done {
                    sub.taken_over = true;
                }
            }
        }
        self.subs.insert(
            key,
            Subscription {
                arn: arn.to_owned(),
                shard: index,
                cursor,
                position: position.clone(),
                started: now,
                last_event: None,
                pending: None,
                taken_over: false,
                done: false,
                wake_gen: 0,
            },
        );
        Ok(())
    }

    fn count_refused(&mut self, own: bool) {
        if own {
            self.subscribe_refused_own += 1;
        } else {
            self.subscribe_refused_fleet += 1;
        }
    }

    /// Answer the pending Pull of a subscription if an event is due.
    pub fn answer_pull(&mut self, key: &SubKey, now: Micros) -> Option<PullAnswer> {
        let sub = self.subs.get(key)?;
        let chunk = sub.pending?;
        if sub.done {
            return None;
        }
        let (index, cursor) = (sub.shard, sub.cursor);
        let answer = if self.shards[index].deleted {
            PullAnswer::Gone
        } else if sub.taken_over {
            PullAnswer::TakenOver
        } else if now >= sub.started + SUBSCRIPTION_LIFETIME {
            PullAnswer::Ended
        } else {
            let shard = &self.shards[index];
            let cursor = cursor.max(shard.trimmed);
            let available = shard.records.len() - cursor;
            let n = self.events_answered;
            let most = if self.ragged_events && n % 3 != 0 {
                1 + (n / 3 % 3) as usize
            } else {
                self.max_event_records
            };
            let at_end = !shard.is_open()
                && available <= most
                && shard.end_within(cursor, shard.records.len()) == shard.records.len();
            let idle_due = sub
                .last_event
                .is_none_or(|t| now >= t + self.idle_event_interval);
            if available == 0 && !at_end && !idle_due {
                let next = sub.last_event.unwrap_or(now) + self.idle_event_interval;
                return Some(PullAnswer::Later(
                    next.min(sub.started + SUBSCRIPTION_LIFETIME),
                ));
            }
            let to = if self.empty_first_event && sub.last_event.is_none() && !at_end {
                cursor
            } else {
                shard.end_within(cursor, cursor + available.min(most))
            };
            let (continuation, children) = if at_end {
                (None, self.children_of(index))
            } else {
                (Some(self.seq_before(index, to)), Vec::new())
            };
            PullAnswer::Event {
                chunk,
                from: cursor,
                to,
                continuation,
                children,
                millis_behind: self.millis_behind(index, to, now),
            }
        };
        let sub = self.subs.get_mut(key).expect("checked");
        sub.pending = None;
        match &answer {
            PullAnswer::Event {
                to, continuation, ..
            } => {
                self.events_answered += 1;
                sub.cursor = *to;
                sub.last_event = Some(now);
                sub.done = continuation.is_none();
            }
            PullAnswer::Ended | PullAnswer::TakenOver | PullAnswer::Gone => sub.done = true,
            PullAnswer::Later(_) => {}
        }
        Some(answer)
    }

    /// Subscriptions of a shard waiting for records.
    pub fn waiting_on(&self, shard: usize) -> Vec<SubKey> {
        self.subs
            .iter()
            .filter(|(_, s)| s.shard == shard && !s.done && s.pending.is_some())
            .map(|(k, _)| *k)
            .collect()
    }

    /// A process died or cancelled: its subscriptions are closed.
    pub fn close_subs(&mut self, pred: impl Fn(&SubKey) -> bool) {
        self.subs.retain(|k, _| !pred(k));
    }

    // ----- polling ----------------------------------------------------------

    /// GetShardIterator.
    pub fn get_shard_iterator(
        &self,
        shard: &ShardRef,
        position: &StartPosition,
        now: Micros,
    ) -> Result<ShardIterator, ErrorClass> {
        let index = self.lookup(shard)?;
        if self.shard_expired(index, now) {
            return Err(ErrorClass::ResourceNotFound);
        }
        let cursor = self.resolve(index, position)?;
        Ok(Self::iterator(index, cursor, now))
    }

    /// `it/{shard}/{cursor}/{now}` (built by hand: one per GetRecords).
    fn iterator(shard: usize, cursor: usize, now: Micros) -> ShardIterator {
        let mut it = String::with_capacity(48);
        it.push_str("it");
        for n in [shard as u64, cursor as u64, now] {
            it.push('/');
            let mut digits = [0u8; 20];
            let mut at = digits.len();
            let mut n = n;
            loop {
                at -= 1;
                digits[at] = b'0' + (n % 10) as u8;
                n /= 10;
                if n == 0 {
                    break;
                }
            }
            for &d in &digits[at..] {
                it.push(char::from(d));
            }
        }
        ShardIterator(it)
    }

    /// (shard, cursor, issued) of an iterator minted by [`Self::iterator`].
    fn parse_iterator(it: &str) -> Option<(u64, u64, u64)> {
        let mut parts = it.strip_prefix("it/")?.split('/');
        let mut next = || -> Option<u64> {
            let p = parts.next()?;
            if p.is_empty() || p.len() > 20 {
                return None;
            }
            p.bytes().try_fold(0u64, |n, b| {
                b.is_ascii_digit()
                    .then(|| n.checked_mul(10)?.checked_add(u64::from(b - b'0')))?
            })
        };
        let parsed = (next()?, next()?, next()?);
        parts.next().is_none().then_some(parsed)
    }

    /// GetRecords with a record limit.
    pub fn get_records(
        &mut self,
        iterator: &ShardIterator,
        limit: u32,
        now: Micros,
    ) -> Result<RecordsAnswer, ErrorClass> {
        self.get_records_calls += 1;
        let Some((shard, cursor, issued)) = Self::parse_iterator(&iterator.0) else {
            return Err(ErrorClass::InvalidArgument);
        };
        let (shard, cursor) = (shard as usize, cursor as usize);
        if shard >= self.shards.len() || self.shards[shard].deleted {
            return Err(ErrorClass::ResourceNotFound);
        }
        if now >= issued + ITERATOR_LIFETIME {
            return Err(ErrorClass::ExpiredIterator);
        }
        let s = &mut self.shards[shard];
        while s.get_records_calls.front().is_some_and(|&t| t + SEC <= now) {
            s.get_records_calls.pop_front();
        }
        if s.get_records_calls.len() >= GET_RECORDS_PER_SEC {
            return Err(ErrorClass::Throttled);
        }
        s.get_records_calls.push_back(now);
        s.get_records_total += 1;
        let from = cursor.max(s.trimmed);
        // Every third call *of this shard* is empty: AWS may answer empty
        // with records ahead, but a shard's reads do progress (a global
        // count could hit the same shard of a steady rotation for ever).
        let to = if self.empty_get_records && s.get_records_total % 3 == 2 {
            from
        } else {
            let most = from + (s.records.len() - from).min(limit.clamp(1, 10_000) as usize);
            s.end_within(from, most)
        };
        let end = !s.is_open() && to == s.records.len();
        Ok(RecordsAnswer {
            shard,
            from,
            to,
            next: (!end).then(|| Self::iterator(shard, to, now)),
            children: if end {
                self.children_of(shard)
            } else {
                Vec::new()
            },
            millis_behind: self.millis_behind(shard, to, now),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn k() -> Kinesis {
        Kinesis::new(StreamId::new("s"), 2, 24 * 3600 * SEC, 1_700_000_000_000)
    }

    #[test]
    fn hand_built_strings_match_their_format() {
        for (ord, shard) in [(0, 0), (1, 7), (123_456_789, 63), (u64::MAX / 2, 1_000_000)] {
            assert_eq!(
                seq_of(ord, shard).as_str(),
                format!("49{ord:030}{shard:024}")
            );
        }
        for (shard, cursor, now) in [(0, 0, 0), (3, 17, 123_456_789), (63, usize::MAX, u64::MAX)] {
            let it = Kinesis::iterator(shard, cursor, now).0;
            assert_eq!(it, format!("it/{shard}/{cursor}/{now}"));
            assert_eq!(
                Kinesis::parse_iterator(&it),
                Some((shard as u64, cursor as u64, now))
            );
        }
        for bad in [
            "",
            "it/",
            "it/1/2",
            "it/1/2/3/4",
            "it/1//3",
            "x/1/2/3",
            "it/1/2/x",
            "it/1/2/99999999999999999999",
        ] {
            assert_eq!(Kinesis::parse_iterator(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn sequence_numbers_are_56_digits_and_increase_across_reshard() {
        let mut k = k();
        k.put(0, "a".into(), vec![1], 0, 0);
        let [a, _] = k.split(0, SEC).unwrap();
        k.put(a, "a".into(), vec![2], 2 * SEC, 5);
        let p = &k.shards[0].records[0].seq;
        let c = &k.shards[a].records[0].seq;
        assert_eq!(p.as_str().len(), 56);
        assert!(c > p);
        assert!(k.shards[0].ending.as_ref().unwrap() > p);
    }

    #[test]
    fn subscribe_within_five_seconds_is_resource_in_use_and_later_takes_over() {
        let mut k = k();
        k.register_consumer(&StreamId::new("s"), "c", 0, 0).unwrap();
        let arn = k.consumers[&(0, "c".to_owned())].arn.clone();
        let sref = k.shard_ref(0);
        let a: SubKey = (0, 1, 1);
        let b: SubKey = (1, 1, 1);
        k.subscribe(a, &sref, &arn, &StartPosition::TrimHorizon, SEC)
            .unwrap();
        assert_eq!(
            k.subscribe(b, &sref, &arn, &StartPosition::TrimHorizon, SEC + 500 * MS),
            Err(ErrorClass::LimitExceeded)
        );
        assert_eq!(
            k.subscribe(b, &sref, &arn, &StartPosition::TrimHorizon, 3 * SEC),
            Err(ErrorClass::ResourceInUse)
        );
        k.subscribe(b, &sref, &arn, &StartPosition::TrimHorizon, 7 * SEC)
            .unwrap();
        assert!(k.subs[&a].taken_over);
        // Another process (a, not b) is refused by b's success: fleet-wide.
        assert_eq!(
            k.subscribe((0, 1, 2), &sref, &arn, &StartPosition::TrimHorizon, 9 * SEC),
            Err(ErrorClass::ResourceInUse)
        );
        assert_eq!((k.subscribe_refused_own, k.subscribe_refused_fleet), (0, 3));
        assert_eq!(
            k.subscribe(b, &sref, &arn, &StartPosition::TrimHorizon, 11 * SEC),
            Err(ErrorClass::ResourceInUse)
        );
        assert_eq!(k.subscribe_refused_own, 1);
    }
}

//! One shard reader: the lifecycle of reading one held shard, by Enhanced
//! Fan-Out (SubscribeToShard) or by polling (GetShardIterator + GetRecords).
//!
//! Models: where reading resumes (the position after the last chunk the
//! worker admitted into the pool), the subscription or the iterator, retries,
//! shard end, and fatal errors. The reader does not own the pending pool: it
//! says when it could use one unit of credit ([`ShardReader::wants_credit`])
//! and reads exactly one chunk per grant (`ShardReader::grant`).
//!
//! AWS rules encoded (SPEC sections 1, 5, 6, 7):
//! - SubscribeToShard is never called sooner than 1 s after the previous
//!   call for this shard ([`SUBSCRIBE_MIN_SPACING`]), nor sooner than 5 s
//!   after a ResourceInUse ([`RESOURCE_IN_USE_HOLD_OFF`]).
//! - A subscription ends normally after at most 5 minutes; the reader then
//!   resubscribes at once (subject to the 1 s rule) with
//!   AFTER_SEQUENCE_NUMBER of the last admitted event's
//!   ContinuationSequenceNumber.
//! - A null ContinuationSequenceNumber, ChildShards, an absent
//!   NextShardIterator, or (for a shard ListShards reports closed,
//!   [`ShardReader::mark_closed`]) an EFO event without records, other
//!   than the first of its subscription, mean shard end: the chunk is
//!   reported, then [`ReaderEvent::End`].
//! - ResourceNotFound and InvalidArgument are fatal for the shard, except
//!   that an InvalidArgument on the stored start position (a checkpoint past
//!   retention) falls back to TRIM_HORIZON once, with a warning; a second
//!   one is fatal (never a release/reclaim loop).
//! - Every other error is retried with the [`Backoff`] schedule (jitter from
//!   the reader's seeded [`Rng`]), without giving up; a chunk resets it.
//! - A shard iterator expires after 5 minutes: ExpiredIterator asks for a
//!   new one at the resume position. GetRecords calls are at least
//!   `min_interval` apart (AWS: 5 calls/s per shard), `idle_interval` after
//!   an empty response from a caught-up shard.
//! - Backpressure: an open subscription that went without credit for
//!   `backpressure_timeout` (below the service's read timeout) is cancelled
//!   and resumed later, from the resume position, when credit is granted.
//! - Idle watchdog: AWS sends an event at least every 5 s on a healthy
//!   subscription (empty ones included), so a read outstanding for
//!   `idle_timeout` (30 s by default) without an event means a silent,
//!   half-open connection: the subscription is cancelled and resubscribed
//!   from the resume position after a transient-error backoff, so a shard
//!   never stalls for good while its lease and heartbeats stay healthy.
//!
//! Invariants:
//! - At most one read is outstanding (one Pull, or one GetRecords), and a
//!   new read is only wanted once the previous chunk was admitted: at most
//!   one chunk per reader awaits admission.
//! - The resume position only moves when a chunk is admitted
//!   ([`ShardReader::admitted`]), so a resubscription or a new iterator never
//!   skips a record that was not handed to the pool; and it only happens
//!   when no chunk awaits admission, so it never re-reads one either.
//! - Inputs for a subscription or an operation that is no longer current
//!   (after a resubscription, shard end, failure or `ShardReader::stop`)
//!   are not the reader's: `handle_input` returns false and changes nothing.
//!   What is current is stated by `ShardReader::awaits` (the open
//!   subscription, or the operation in flight): the worker routes answers
//!   by it.
//! - No input panics the reader; after end, failure or stop it emits nothing
//!   but the Cancel that closes its subscription.
//!
//! Read sizing (SPEC 7, [`ReadSize`], [`ShardReader::read_plan`]): the pool
//! room a read reserves before it is sent comes from what this shard's
//! reads brought: per Kinesis record (expanded: KPL sub-records and their
//! partition keys, the way the pool charges them) for a GetRecords `Limit`,
//! per event for a Pull. Before its first answer a shard is assumed to
//! carry 1 MiB Kinesis records (the AWS record ceiling) and 10 MiB events.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use crate::backoff::Backoff;
use crate::config::{Config, Retrieval};
use crate::ids::{ChunkId, IdMint, OpId, ShardRef, SubId};
use crate::io::{Action, ChildShard, Chunk, ErrorClass, Input, RecordMeta, ShardIterator};
use crate::kpl::HashRange;
use crate::rng::Rng;
use crate::sequence::{SeqNum, StartPosition};

/// SubscribeToShard for one shard at most once per second (AWS limit).
pub const SUBSCRIBE_MIN_SPACING: Duration = Duration::from_secs(1);

/// After a ResourceInUse, wait at least this long before subscribing again
/// (AWS: a second call within 5 s of a successful one fails).
pub const RESOURCE_IN_USE_HOLD_OFF: Duration = Duration::from_secs(5);

/// Default for [`ReaderMode::Efo`]'s `backpressure_timeout` (SPEC 7).
#[cfg(test)]
pub const DEFAULT_BACKPRESSURE_TIMEOUT: Duration = Duration::from_secs(30);

/// The GetRecords `Limit` ceiling (AWS).
const MAX_GET_RECORDS_LIMIT: u32 = 10_000;

/// What a read is assumed to bring per Kinesis record, in bytes, before the
/// shard's first answer: the AWS record ceiling (1 MiB).
pub const UNOBSERVED_RECORD_BYTES: u64 = 1 << 20;

/// What an EFO event is assumed to bring, in bytes, before the shard's
/// first event: a maximal one. AWS publishes no event size; 10 MiB is the
/// GetRecords ceiling, five seconds of the 2 MB/s push rate (kinesin-sim:
/// with 1 MiB, first events after a backlog of large records held 40 MiB
/// over the budget).
pub const UNOBSERVED_EVENT_BYTES: u64 = 10 << 20;

/// Pool bytes charged per user record of a read in flight, on top of
/// [`IN_FLIGHT_FACTOR`] times its payload: the record's JSON fields
/// (SequenceNumber, ApproximateArrivalTimestamp, the field names) and the
/// structure it decodes into.
pub const RECORD_IN_FLIGHT_BYTES: u64 = 256;

/// How many times its payload a read in flight is charged until its answer
/// is decoded. A GetRecords answer or an EFO event is JSON, the data base64
/// (4/3 of it) plus each record's fields; the HTTP body arrives in pieces
/// that are joined, and while it is decoded the JSON and the records are
/// in memory at once: 2.4 times the records at the least, and what the
/// runtime's buffers and the allocator keep besides. Measured
/// (`scripts/bench.sh memory-cold`, 1,000-byte records, 200 shards, a sink
/// acknowledging at once, 64 MiB budget): peak RSS 233 MiB charged at the
/// decoded size, 179 MiB at 5/2, 133 MiB at 4, that is 5.6 MiB of RSS per
/// MiB of records in flight.
pub const IN_FLIGHT_FACTOR: u64 = 6;

/// What a read in flight is charged in the pool for `records` user records
/// of `bytes` payload bytes (their decoded size, what the pool holds once
/// they arrive): [`IN_FLIGHT_FACTOR`] times the payload plus
/// [`RECORD_IN_FLIGHT_BYTES`] per record. The reservation is exchanged for
/// the decoded size when the answer arrives (after decoding).
pub fn in_flight_bytes(records: u64, bytes: u64) -> u64 {
    bytes
        .saturating_mul(IN_FLIGHT_FACTOR)
        .saturating_add(records.saturating_mul(RECORD_IN_FLIGHT_BYTES))
}

/// The bytes a reader's first read reserves (nothing observed yet): one
/// Kinesis record of the AWS ceiling for a GetRecords, a maximal event for
/// a Pull ([`UNOBSERVED_EVENT_BYTES`] is taken as its size in memory, JSON
/// included).
pub fn first_read_bytes(efo: bool) -> u64 {
    if efo {
        UNOBSERVED_EVENT_BYTES
    } else {
        in_flight_bytes(1, UNOBSERVED_RECORD_BYTES)
    }
}

/// What a shard's reads brought, to size the next read's reservation: the
/// largest Kinesis record (expanded) and the largest read seen recently,
/// each decaying by a sixteenth per answer (at least one unit) towards
/// what answers bring now (a larger record raises them at once; a 1 MiB
/// record is forgotten to a tenth in about 36 answers, a 13-record event
/// in 12). Every value is at least 1.
///
/// The largest record, not the average: a read sized by the average
/// brings the occasional large record over its reservation (kinesin-sim,
/// 10 % of records up to 1 MiB: 61 MiB held over the budget with the
/// average, halving per answer).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ReadSize {
    /// User records of the largest KPL aggregate (1 for plain records).
    pub records_per_record: u64,
    /// Pool bytes of the largest Kinesis record, expanded.
    pub bytes_per_record: u64,
    /// User records per read (one EFO event or GetRecords answer).
    pub records_per_read: u64,
    /// Pool bytes per read.
    pub bytes_per_read: u64,
    observed: bool,
}

impl ReadSize {
    /// Before any answer: 1 MiB Kinesis records holding one user record,
    /// 10 MiB events.
    pub const UNOBSERVED: ReadSize = ReadSize {
        records_per_record: 1,
        bytes_per_record: UNOBSERVED_RECORD_BYTES,
        records_per_read: 1,
        bytes_per_read: UNOBSERVED_EVENT_BYTES,
        observed: false,
    };

    /// Learn from one answer. The first replaces the assumption; later
    /// ones raise the values at once or lower them by a sixteenth.
    pub fn observe(&mut self, data: &Chunk) {
        let fold = |old: u64, new: u64, first: bool| {
            let new = new.max(1);
            if first {
                new
            } else {
                // At least one unit per answer: `old / 16` is 0 below 16,
                // and a largest-recent of 13 records then never decayed
                // (kinesin-sim seeds 7770, 19650).
                new.max(old - (old / 16).max(1))
            }
        };
        let first = !self.observed;
        // The largest Kinesis record: user records of one sequence number
        // are one record (its KPL sub-records) and come together.
        let (mut most_records, mut most_bytes) = (0u64, 0u64);
        let (mut records, mut bytes) = (0u64, 0u64);
        let mut prev: Option<&RecordMeta> = None;
        for r in &data.records {
            // A new Kinesis record starts after the last user record kept
            // from the previous one (`last_sub`: every plain record, so the
            // sequence numbers are compared only inside KPL aggregates).
            if prev.is_some_and(|p| p.last_sub || p.ext.seq != r.ext.seq) {
                (records, bytes) = (0, 0);
            }
            records += 1;
            bytes += u64::from(r.bytes);
            most_records = most_records.max(records);
            most_bytes = most_bytes.max(bytes);
            prev = Some(r);
        }
        if data.kinesis_records > 0 {
            self.records_per_record = fold(self.records_per_record, most_records, first);
            self.bytes_per_record = fold(self.bytes_per_record, most_bytes, first);
        }
        self.records_per_read = fold(self.records_per_read, data.records.len() as u64, first);
        self.bytes_per_read = fold(self.bytes_per_read, data.bytes(), first);
        self.observed = true;
    }
}

/// The pool's state as the credit round sees it when it sizes one read.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PoolRoom {
    /// Records and bytes not used nor reserved.
    pub free: (u64, u64),
    /// The budget.
    pub max: (u64, u64),
    /// A fair share for one read: the budget over the shards read, or the
    /// room left over the readers asking now when that is more.
    pub share: (u64, u64),
    /// The budget over the shards read (no more than that for a read
    /// that may stay outstanding: an EFO Pull).
    pub fair: (u64, u64),
}

/// What one read reserves in the pool before it is sent.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ReadPlan {
    /// The GetRecords `Limit` (Kinesis records; 0 for a Pull).
    pub limit: u32,
    /// Records reserved.
    pub records: u64,
    /// Bytes reserved.
    pub bytes: u64,
}

/// How a reader reads.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ReaderMode {
    /// Enhanced Fan-Out (SubscribeToShard).
    Efo {
        /// ConsumerARN; `None` until the registration is ACTIVE (nothing is
        /// subscribed before [`ShardReader::set_consumer_arn`]).
        consumer_arn: Option<String>,
        /// Cancel an open subscription that had no credit for this long.
        backpressure_timeout: Duration,
        /// Cancel and resubscribe a subscription whose outstanding read
        /// brought no event for this long (a silent, half-open connection).
        idle_timeout: Duration,
    },
    /// Polling (GetShardIterator + GetRecords).
    Polling {
        /// Wait after an empty response from a caught-up shard.
        idle_interval: Duration,
        /// Minimum time between two GetRecords calls.
        min_interval: Duration,
        /// Upper bound of the GetRecords `Limit`.
        max_records: u32,
    },
}

impl ReaderMode {
    /// The mode a [`Config`] asks for; `consumer_arn` is the registration's
    /// ARN once known (ignored for polling).
    pub fn from_config(config: &Config, consumer_arn: Option<String>) -> Self {
        match &config.retrieval {
            Retrieval::Polling {
                idle_interval,
                min_interval,
                max_records,
            } => ReaderMode::Polling {
                idle_interval: *idle_interval,
                min_interval: *min_interval,
                max_records: *max_records,
            },
            Retrieval::Efo { .. } => ReaderMode::Efo {
                consumer_arn,
                backpressure_timeout: config.backpressure_timeout,
                idle_timeout: config.subscription_idle_timeout,
            },
        }
    }
}

/// What a reader tells the worker.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ReaderEvent {
    /// Records arrived (answer to our Pull / GetRecords). The worker admits
    /// them into the pool (maybe later) and then calls
    /// [`ShardReader::admitted`]. Chunks without records are reported too,
    /// so the worker can free them (and admitting them moves the position).
    Chunk {
        /// The runtime keeps the payload under this id.
        chunk: ChunkId,
        /// The records' metadata.
        data: Chunk,
    },
    /// Everything of the shard was read. No more chunks will come.
    End {
        /// The child shards, when the service named them.
        children: Vec<ChildShard>,
    },
    /// Fatal for this shard: the worker releases the lease and reports.
    Failed {
        /// The error that ended reading.
        class: ErrorClass,
    },
    /// Something an operator should see (e.g. the fallback to TRIM_HORIZON).
    Warning(String),
}

/// Overall life of a reader.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Phase {
    Reading,
    Ended,
    Failed,
    Stopped,
}

/// EFO read state.
#[derive(Clone, Debug)]
enum EfoState {
    /// No subscription. Subscribe from the resume position once `due` (which
    /// includes the 1 s and 5 s rules), the ARN is known and no chunk awaits
    /// admission. `on_credit`: only when granted credit (parked after a
    /// backpressure cancel).
    Idle { due: Instant, on_credit: bool },
    /// A subscription is open; `pull` is the chunk of the outstanding Pull.
    Open { sub: SubId, pull: Option<ChunkId> },
}

/// Polling read state.
#[derive(Clone, Debug)]
enum PollState {
    /// Ask for an iterator at the resume position once `due`.
    NeedIterator { due: Instant },
    /// GetShardIterator in flight.
    IteratorInFlight { op: OpId },
    /// Holding an iterator; GetRecords allowed from `due`, with credit.
    Ready {
        iterator: ShardIterator,
        due: Instant,
    },
    /// GetRecords in flight; `iterator` is kept to retry with.
    RecordsInFlight {
        op: OpId,
        chunk: ChunkId,
        iterator: ShardIterator,
    },
}

#[derive(Clone, Debug)]
enum State {
    Efo {
        consumer_arn: Option<String>,
        backpressure_timeout: Duration,
        state: EfoState,
    },
    Polling {
        idle_interval: Duration,
        min_interval: Duration,
        max_records: u32,
        last_get_at: Option<Instant>,
        state: PollState,
    },
}

/// What a reader asked and awaits the answers of (see
/// [`ShardReader::awaits`]): the worker routes those answers to it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Asked {
    /// The events, end and errors of this subscription (SubscribeToShard).
    Sub(SubId),
    /// The answer of this operation (GetShardIterator, or GetRecords with
    /// the `chunk` id its payload comes under).
    Op { op: OpId, chunk: Option<ChunkId> },
}

/// A chunk reported to the worker and not yet admitted.
#[derive(Clone, Debug)]
struct Awaiting {
    chunk: ChunkId,
    /// The resume position once it is admitted (`None`: unchanged).
    next: Option<StartPosition>,
}

/// The reader of one held shard. See the module doc for its rules.
///
/// Methods by kind:
/// - getters: [`shard`](Self::shard), [`resume_position`](Self::resume_position),
///   [`is_ended`](Self::is_ended), [`is_reading`](Self::is_reading),
///   [`holds_credit`](Self::holds_credit), [`subscribe_calls`](Self::subscribe_calls),
///   [`last_subscribe_at`](Self::last_subscribe_at), `awaits`,
///   [`consumer_arn`](Self::consumer_arn), [`state_name`](Self::state_name),
///   [`wants_credit`](Self::wants_credit);
/// - inputs: `handle_input`, `handle_timeout`, and the worker's notes
///   [`set_consumer_arn`](Self::set_consumer_arn), [`mark_closed`](Self::mark_closed),
///   [`admitted`](Self::admitted);
/// - commands: `grant` (one unit of credit), `stop`;
/// - outputs: `poll_action`, [`poll_event`](Self::poll_event),
///   [`poll_timeout`](Self::poll_timeout).
///
/// After every input or command, drain `poll_action` and `poll_event`, then
/// check `wants_credit` (it can also turn true at a `poll_timeout` deadline).
#[derive(Clone, Debug)]
pub struct ShardReader {
    shard: ShardRef,
    state: State,
    phase: Phase,
    /// Where reading resumes: after the last admitted chunk.
    position: StartPosition,
    /// `position` is still the stored start position (a checkpoint): an
    /// InvalidArgument on it may fall back to TRIM_HORIZON.
    position_is_stored: bool,
    fell_back: bool,
    /// ListShards' EndingSequenceNumber, once it reported the shard closed.
    closed: Option<SeqNum>,
    /// The shard's hash range, carried in every read so the runtime drops
    /// KPL sub-records of other shards ([`crate::kpl::expand`]); the full
    /// range until the worker learns the shard's own.
    range: HashRange,
    /// The current subscription has delivered an event (an empty *first*
    /// event never means shard end: a stream may open with one before the
    /// records of a closed shard).
    sub_had_event: bool,
    awaiting: Option<Awaiting>,
    rng: Rng,
    backoff: Backoff,
    subscribe_calls: u64,
    last_subscribe_at: Option<Instant>,
    resource_in_use_at: Option<Instant>,
    /// Wake-up for a deadline that makes an action due or credit wanted;
    /// cleared once reached.
    wake: Option<(Instant, &'static str)>,
    /// When the open subscription's lack of credit becomes a cancel.
    backpressure_at: Option<Instant>,
    /// EFO: how long an outstanding read may bring no event.
    idle_timeout: Option<Duration>,
    /// When the outstanding Pull's silence becomes a cancel (the watchdog).
    idle_at: Option<Instant>,
    /// What this shard's reads brought (sizes the next reservation).
    size: ReadSize,
    out: VecDeque<Action>,
    events: VecDeque<ReaderEvent>,
}

impl ShardReader {
    /// A reader of `shard` starting at `start` (the worker derives it from
    /// the checkpoint, or TRIM_HORIZON / AT_TIMESTAMP). A sequence-number
    /// start counts as a stored position (eligible for the one fallback).
    pub fn new(
        shard: ShardRef,
        start: StartPosition,
        mode: ReaderMode,
        rng_seed: u64,
        now: Instant,
    ) -> Self {
        let idle_timeout = match &mode {
            ReaderMode::Efo { idle_timeout, .. } => Some(*idle_timeout),
            ReaderMode::Polling { .. } => None,
        };
        let state = match mode {
            ReaderMode::Efo {
                consumer_arn,
                backpressure_timeout,
                ..
            } => State::Efo {
                consumer_arn,
                backpressure_timeout,
                state: EfoState::Idle {
                    due: now,
                    on_credit: false,
                },
            },
            ReaderMode::Polling {
                idle_interval,
                min_interval,
                max_records,
            } => State::Polling {
                idle_interval,
                min_interval,
                max_records,
                last_get_at: None,
                state: PollState::NeedIterator { due: now },
            },
        };
        ShardReader {
            shard,
            state,
            phase: Phase::Reading,
            position_is_stored: start.sequence_number().is_some(),
            position: start,
            fell_back: false,
            closed: None,
            range: HashRange::FULL,
            sub_had_event: false,
            awaiting: None,
            rng: Rng::new(rng_seed),
            backoff: Backoff::new(),
            subscribe_calls: 0,
            last_subscribe_at: None,
            resource_in_use_at: None,
            wake: None,
            backpressure_at: None,
            idle_timeout,
            idle_at: None,
            size: ReadSize::UNOBSERVED,
            out: VecDeque::new(),
            events: VecDeque::new(),
        }
    }

    // ----- getters ---------------------------------------------------------

    /// Where reading would resume (after the last admitted chunk); `None`
    /// once the shard ended.
    pub fn resume_position(&self) -> Option<&StartPosition> {
        (self.phase != Phase::Ended).then_some(&self.position)
    }

    /// True once [`ReaderEvent::End`] was emitted.
    #[cfg(test)]
    pub fn is_ended(&self) -> bool {
        self.phase == Phase::Ended
    }

    /// True until the shard ended, failed or the reader was stopped.
    #[cfg(test)]
    pub fn is_reading(&self) -> bool {
        self.phase == Phase::Reading
    }

    /// True while a granted read (Pull or GetRecords) awaits its answer.
    pub fn holds_credit(&self) -> bool {
        self.phase == Phase::Reading
            && matches!(
                &self.state,
                State::Efo {
                    state: EfoState::Open { pull: Some(_), .. },
                    ..
                } | State::Polling {
                    state: PollState::RecordsInFlight { .. },
                    ..
                }
            )
    }

    /// The chunk id of the outstanding read (the Pull or GetRecords that
    /// holds credit), if any.
    pub fn read_chunk(&self) -> Option<ChunkId> {
        if !self.holds_credit() {
            return None;
        }
        match &self.state {
            State::Efo {
                state: EfoState::Open { pull, .. },
                ..
            } => *pull,
            State::Polling {
                state: PollState::RecordsInFlight { chunk, .. },
                ..
            } => Some(*chunk),
            _ => None,
        }
    }

    /// The subscription or operation whose answers are this reader's now:
    /// the open subscription (EFO), the GetShardIterator or GetRecords in
    /// flight (polling); `None` between reads and once ended, failed or
    /// stopped. It changes to a new one only when the reader emits the
    /// Subscribe, GetShardIterator or GetRecords that asks it, so the
    /// worker reads it after every action the reader emits.
    pub(crate) fn awaits(&self) -> Option<Asked> {
        if self.phase != Phase::Reading {
            return None;
        }
        match &self.state {
            State::Efo {
                state: EfoState::Open { sub, .. },
                ..
            } => Some(Asked::Sub(*sub)),
            State::Efo {
                state: EfoState::Idle { .. },
                ..
            } => None,
            State::Polling { state, .. } => match state {
                PollState::IteratorInFlight { op } => Some(Asked::Op {
                    op: *op,
                    chunk: None,
                }),
                PollState::RecordsInFlight { op, chunk, .. } => Some(Asked::Op {
                    op: *op,
                    chunk: Some(*chunk),
                }),
                PollState::NeedIterator { .. } | PollState::Ready { .. } => None,
            },
        }
    }

    /// SubscribeToShard calls made so far.
    #[cfg(test)]
    pub fn subscribe_calls(&self) -> u64 {
        self.subscribe_calls
    }

    /// When the last SubscribeToShard was emitted.
    #[cfg(test)]
    pub fn last_subscribe_at(&self) -> Option<Instant> {
        self.last_subscribe_at
    }

    /// The consumer ARN (EFO, once known).
    pub fn consumer_arn(&self) -> Option<&str> {
        match &self.state {
            State::Efo { consumer_arn, .. } => consumer_arn.as_deref(),
            State::Polling { .. } => None,
        }
    }

    /// A short name of the state, for traces.
    #[cfg(test)]
    pub fn state_name(&self) -> &'static str {
        match self.phase {
            Phase::Ended => return "ended",
            Phase::Failed => return "failed",
            Phase::Stopped => return "stopped",
            Phase::Reading => {}
        }
        match &self.state {
            State::Efo {
                consumer_arn: None, ..
            } => "awaiting-consumer",
            State::Efo { state, .. } => match state {
                EfoState::Idle {
                    on_credit: false, ..
                } => "subscribe-wait",
                EfoState::Idle {
                    on_credit: true, ..
                } => "parked",
                EfoState::Open { pull: None, .. } => "subscribed",
                EfoState::Open { pull: Some(_), .. } => "pulling",
            },
            State::Polling { state, .. } => match state {
                PollState::NeedIterator { .. } => "iterator-wait",
                PollState::IteratorInFlight { .. } => "getting-iterator",
                PollState::Ready { .. } => "ready",
                PollState::RecordsInFlight { .. } => "getting-records",
            },
        }
    }

    /// True when the reader could use one unit of credit now: EFO with an
    /// open subscription and no Pull outstanding, or parked after a
    /// backpressure cancel and allowed to resubscribe; polling with an
    /// iterator, nothing in flight and the next GetRecords due. Never while
    /// a chunk awaits admission.
    pub fn wants_credit(&self, now: Instant) -> bool {
        if self.phase != Phase::Reading || self.awaiting.is_some() {
            return false;
        }
        match &self.state {
            State::Efo {
                consumer_arn,
                state,
                ..
            } => match state {
                EfoState::Open { pull, .. } => pull.is_none(),
                EfoState::Idle { due, on_credit } => {
                    *on_credit && consumer_arn.is_some() && *due <= now
                }
            },
            State::Polling { state, .. } => {
                matches!(state, PollState::Ready { due, .. } if *due <= now)
            }
        }
    }

    /// The reservation of the next read, or `None` when it does not fit in
    /// `room.free` (wait for room; an empty pool always fits one, since no
    /// reservation exceeds the budget).
    ///
    /// Bytes are charged in flight ([`in_flight_bytes`]: what the answer
    /// holds until it is decoded, not its decoded size).
    /// EFO: a Pull reserves the largest recent event, and at least a fair
    /// share (so reads of quiet shards never reserve less than their part of
    /// the budget between them). Polling: one Kinesis record must fit; the
    /// `Limit` is as many records as fit in the free room, up to the larger
    /// of the fair share and one record, and `max_records`.
    pub fn read_plan(&self, room: PoolRoom) -> Option<ReadPlan> {
        let fits = |r: u64, b: u64| r <= room.free.0 && b <= room.free.1;
        let clip = |(r, b): (u64, u64)| (r.min(room.max.0).max(1), b.min(room.max.1).max(1));
        match &self.state {
            State::Efo { .. } => {
                // The budget's fair share, not the room left: a Pull waits
                // for the shard's next event (seconds on a quiet shard),
                // and one that took all the free room starved the shards
                // asking after it (kinesin-sim seed 843: three shards
                // without a Pull for 30 s).
                let wire = if self.size.observed {
                    in_flight_bytes(self.size.records_per_read, self.size.bytes_per_read)
                } else {
                    first_read_bytes(true)
                };
                let (records, bytes) = clip((
                    self.size.records_per_read.max(room.fair.0),
                    wire.max(room.fair.1),
                ));
                fits(records, bytes).then_some(ReadPlan {
                    limit: 0,
                    records,
                    bytes,
                })
            }
            State::Polling { max_records, .. } => {
                // Charged in flight (`in_flight_bytes`): the Limit counts
                // records by what they cost while their answer is decoded.
                let per_r = self.size.records_per_record;
                let (per_r, per_b) =
                    clip((per_r, in_flight_bytes(per_r, self.size.bytes_per_record)));
                if !fits(per_r, per_b) {
                    return None;
                }
                let allow_r = room.free.0.min(room.share.0.max(per_r));
                let allow_b = room.free.1.min(room.share.1.max(per_b));
                let n = (allow_r / per_r)
                    .min(allow_b / per_b)
                    .min(u64::from((*max_records).clamp(1, MAX_GET_RECORDS_LIMIT)))
                    .max(1);
                Some(ReadPlan {
                    limit: u32::try_from(n).unwrap_or(MAX_GET_RECORDS_LIMIT),
                    records: n * per_r,
                    bytes: n * per_b,
                })
            }
        }
    }

    // ----- notes from the worker --------------------------------------------

    /// The EFO registration is ACTIVE: subscriptions may start. Ignored for
    /// polling.
    pub fn set_consumer_arn(&mut self, arn: String) {
        if let State::Efo { consumer_arn, .. } = &mut self.state {
            *consumer_arn = Some(arn);
        }
    }

    /// SubscribeToShard spacing to hand to the next reader of this shard:
    /// (last SubscribeToShard, last ResourceInUse). The AWS rules are per
    /// consumer and shard, not per reader (kinesin-sim: a worker that
    /// self-fenced and took the lease again subscribed 3.4 s after a
    /// ResourceInUse).
    pub fn subscribe_spacing(&self) -> (Option<Instant>, Option<Instant>) {
        (self.last_subscribe_at, self.resource_in_use_at)
    }

    /// Start from a previous reader's [`Self::subscribe_spacing`]: the
    /// first SubscribeToShard waits 1 s after its last call and 5 s after
    /// its last ResourceInUse.
    pub fn carry_subscribe_spacing(
        &mut self,
        now: Instant,
        last_subscribe: Option<Instant>,
        resource_in_use: Option<Instant>,
    ) {
        self.last_subscribe_at = self.last_subscribe_at.max(last_subscribe);
        self.resource_in_use_at = self.resource_in_use_at.max(resource_in_use);
        if let State::Efo {
            state: EfoState::Idle { due, on_credit },
            ..
        } = self.state
        {
            self.efo_idle(now, due, on_credit);
        }
    }

    /// ListShards reports this shard closed (EndingSequenceNumber present).
    /// For EFO, an event without records then means shard end (the mock
    /// never ends subscriptions on a closed shard, nor sends ChildShards),
    /// unless it is the first event of its subscription: a stream may open
    /// a subscription with an empty event before the records that remain.
    pub fn mark_closed(&mut self, ending: SeqNum) {
        self.closed = Some(ending);
    }

    /// A later ListShards reports this shard open: a closed mark came from
    /// an earlier stream of the same name (deleted and recreated), and no
    /// longer counts as evidence of the end.
    pub fn unmark_closed(&mut self) {
        self.closed = None;
    }

    /// The shard's hash range (from ListShards or a parent's ChildShards):
    /// every later read carries it.
    pub fn set_range(&mut self, range: HashRange) {
        self.range = range;
    }

    /// The worker admitted `chunk` into the pool and handed it on: reading
    /// resumes after it (EFO: AFTER_SEQUENCE_NUMBER of its continuation;
    /// polling: after its last record, AT_SEQUENCE_NUMBER plus sub-sequence
    /// filtering when that record is inside a KPL aggregate). Unknown chunks
    /// are ignored.
    pub fn admitted(&mut self, chunk: ChunkId) {
        if self.awaiting.as_ref().is_none_or(|a| a.chunk != chunk) {
            return;
        }
        if let Some(next) = self.awaiting.take().and_then(|a| a.next) {
            self.position = next;
            self.position_is_stored = false;
        }
    }

    // ----- outputs ---------------------------------------------------------

    /// The next action that needs no credit (SubscribeToShard,
    /// GetShardIterator, a Pull that follows a Subscribe made with credit,
    /// Cancel), when due.
    pub(crate) fn poll_action(&mut self, now: Instant, mint: &mut IdMint) -> Option<Action> {
        if let Some(action) = self.out.pop_front() {
            return Some(action);
        }
        if self.phase != Phase::Reading || self.awaiting.is_some() {
            return None;
        }
        match &mut self.state {
            State::Efo {
                consumer_arn: Some(_),
                state:
                    EfoState::Idle {
                        due,
                        on_credit: false,
                    },
                ..
            } if *due <= now => self.subscribe(now, mint),
            State::Polling {
                state: PollState::NeedIterator { due },
                ..
            } if *due <= now => {
                let op = mint.op();
                if let State::Polling { state, .. } = &mut self.state {
                    *state = PollState::IteratorInFlight { op };
                }
                self.wake = None;
                Some(Action::GetShardIterator {
                    op,
                    shard: self.shard.clone(),
                    position: self.position.clone(),
                })
            }
            _ => None,
        }
    }

    /// Credit granted: read one chunk. EFO: `Action::Pull` (or, when parked
    /// after a backpressure cancel, `Action::Subscribe` with the Pull queued
    /// right behind it in `poll_action`); polling: `Action::GetRecords` with
    /// `limit = min(max_records, max(limit_records, 1))`. `None` (and no
    /// change) when [`wants_credit`](Self::wants_credit) is false.
    pub(crate) fn grant(
        &mut self,
        now: Instant,
        limit_records: u32,
        mint: &mut IdMint,
    ) -> Option<Action> {
        if !self.wants_credit(now) {
            return None;
        }
        match &mut self.state {
            State::Efo {
                state: EfoState::Open { sub, pull },
                ..
            } => {
                let chunk = mint.chunk();
                *pull = Some(chunk);
                let sub = *sub;
                self.backpressure_at = None;
                self.idle_at = self.idle_timeout.map(|d| at(now, d));
                Some(Action::Pull { sub, chunk })
            }
            State::Efo {
                state: EfoState::Idle { .. },
                ..
            } => {
                let subscribe = self.subscribe(now, mint)?;
                if let State::Efo {
                    state: EfoState::Open { sub, pull },
                    ..
                } = &mut self.state
                {
                    let chunk = mint.chunk();
                    *pull = Some(chunk);
                    self.out.push_back(Action::Pull { sub: *sub, chunk });
                }
                self.backpressure_at = None;
                self.idle_at = self.idle_timeout.map(|d| at(now, d));
                Some(subscribe)
            }
            State::Polling {
                max_records,
                last_get_at,
                state,
                ..
            } => {
                let PollState::Ready { iterator, .. } = state else {
                    return None;
                };
                let iterator = iterator.clone();
                let limit = (*max_records)
                    .clamp(1, MAX_GET_RECORDS_LIMIT)
                    .min(limit_records.max(1));
                let op = mint.op();
                let chunk = mint.chunk();
                *state = PollState::RecordsInFlight {
                    op,
                    chunk,
                    iterator: iterator.clone(),
                };
                *last_get_at = Some(now);
                self.wake = None;
                let skip_through = match &self.position {
                    StartPosition::AtSubSequence(ext) => Some(ext.clone()),
                    _ => None,
                };
                Some(Action::GetRecords {
                    op,
                    shard: self.shard.clone(),
                    iterator,
                    limit,
                    chunk,
                    skip_through,
                    range: self.range,
                })
            }
        }
    }

    /// The next event for the worker.
    pub fn poll_event(&mut self) -> Option<ReaderEvent> {
        self.events.pop_front()
    }

    /// The next deadline and why: a retry or resubscription becoming due,
    /// credit becoming wanted, or a backpressure cancel.
    pub fn poll_timeout(&self) -> Option<(Instant, &'static str)> {
        if self.phase != Phase::Reading {
            return None;
        }
        let backpressure = self.backpressure_at.map(|t| (t, "backpressure timeout"));
        let idle = self.idle_at.map(|t| (t, "subscription idle"));
        [self.wake, backpressure, idle]
            .into_iter()
            .flatten()
            .min_by_key(|(t, _)| *t)
    }

    // ----- inputs ----------------------------------------------------------

    /// Fire the deadlines due at `now`. A spurious call is a no-op.
    pub(crate) fn handle_timeout(&mut self, now: Instant) {
        if self.phase != Phase::Reading {
            return;
        }
        if self.wake.is_some_and(|(t, _)| t <= now) {
            self.wake = None;
        }
        if self.idle_at.is_some_and(|t| t <= now) {
            self.idle_at = None;
            if let State::Efo {
                state: EfoState::Open { sub, pull: Some(_) },
                ..
            } = &self.state
            {
                let sub = *sub;
                self.out.push_back(Action::Cancel { sub });
                self.events.push_back(ReaderEvent::Warning(format!(
                    "{}: no SubscribeToShard event for {:?} (a silent connection): resubscribing",
                    self.shard,
                    self.idle_timeout.unwrap_or_default()
                )));
                if let Some(due) = self.retry_after(now, ErrorClass::Transient, true) {
                    self.efo_idle(now, due, false);
                }
            }
        }
        if self.backpressure_at.is_some_and(|t| t <= now) {
            self.backpressure_at = None;
            if let State::Efo {
                state: EfoState::Open { sub, pull: None },
                ..
            } = &self.state
            {
                self.out.push_back(Action::Cancel { sub: *sub });
                let delay = self.backoff.next_delay(&mut self.rng);
                self.efo_idle(now, at(now, delay), true);
            }
        }
    }

    /// Inputs about this reader: SubscriptionEvent / Ended / Error of its
    /// open subscription (an event only for its outstanding Pull), Iterator
    /// and Records of its operation in flight. Returns false for any other
    /// input (nothing changes; the worker frees a stale chunk).
    /// A consumed input's chunk is taken out of it (`std::mem::take`) and
    /// moved into the reader's [`ReaderEvent::Chunk`]; an input the reader
    /// does not take is left as it was (the worker frees its chunk).
    pub(crate) fn handle_input(&mut self, now: Instant, input: &mut Input) -> bool {
        if self.phase != Phase::Reading {
            return false;
        }
        match (&self.state, input) {
            (
                State::Efo {
                    state: EfoState::Open { sub, pull },
                    ..
                },
                Input::SubscriptionEvent {
                    sub: s,
                    chunk,
                    data,
                },
            ) if s == sub && *pull == Some(*chunk) => {
                let sub = *sub;
                self.on_efo_event(now, sub, *chunk, std::mem::take(data));
                true
            }
            (
                State::Efo {
                    state: EfoState::Open { sub, .. },
                    ..
                },
                Input::SubscriptionEnded { sub: s },
            ) if s == sub => {
                self.efo_idle(now, now, false);
                true
            }
            (
                State::Efo {
                    state: EfoState::Open { sub, .. },
                    ..
                },
                Input::SubscriptionError { sub: s, class },
            ) if s == sub => {
                self.backpressure_at = None;
                if let Some(due) = self.retry_after(now, *class, true) {
                    self.efo_idle(now, due, false);
                }
                true
            }
            (
                State::Polling {
                    state: PollState::IteratorInFlight { op },
                    ..
                },
                Input::Iterator { op: o, result },
            ) if o == op => {
                match result {
                    Ok(iterator) => {
                        let due = self.next_get_due(now, false);
                        self.poll_ready(now, iterator.clone(), due);
                    }
                    Err(class) => {
                        if let Some(due) = self.retry_after(now, *class, true) {
                            self.poll_need_iterator(now, due);
                        }
                    }
                }
                true
            }
            (
                State::Polling {
                    state:
                        PollState::RecordsInFlight {
                            op,
                            chunk,
                            iterator,
                        },
                    ..
                },
                Input::Records { op: o, result },
            ) if o == op => {
                let (chunk, iterator) = (*chunk, iterator.clone());
                match result {
                    Ok((data, next)) => {
                        self.on_records(now, chunk, std::mem::take(data), next.take())
                    }
                    Err(ErrorClass::ExpiredIterator) => self.poll_need_iterator(now, now),
                    Err(class) => {
                        if let Some(retry) = self.retry_after(now, *class, false) {
                            let due = self.next_get_due(now, false).max(retry);
                            self.poll_ready(now, iterator, due);
                        }
                    }
                }
                true
            }
            _ => false,
        }
    }

    /// Stop reading (lease lost, hand-off, shutdown, shard failed). Returns
    /// the Cancel of a subscription that may still be open. Afterwards every
    /// input is not the reader's and nothing is emitted. Credit held by an
    /// outstanding read is returned with the stop.
    pub(crate) fn stop(&mut self) -> Option<Action> {
        if self.phase == Phase::Stopped {
            return None;
        }
        let queued_cancel = self
            .out
            .drain(..)
            .find(|a| matches!(a, Action::Cancel { .. }));
        let open = match (&self.state, self.phase) {
            (
                State::Efo {
                    state: EfoState::Open { sub, .. },
                    ..
                },
                Phase::Reading,
            ) => Some(Action::Cancel { sub: *sub }),
            _ => None,
        };
        self.phase = Phase::Stopped;
        self.wake = None;
        self.backpressure_at = None;
        open.or(queued_cancel)
    }

    // ----- internals -------------------------------------------------------

    /// Emit SubscribeToShard from the resume position; the subscription is
    /// open from now on (failures arrive as SubscriptionError).
    fn subscribe(&mut self, now: Instant, mint: &mut IdMint) -> Option<Action> {
        let State::Efo {
            consumer_arn: Some(consumer_arn),
            backpressure_timeout,
            state,
        } = &mut self.state
        else {
            return None;
        };
        let sub = mint.sub();
        *state = EfoState::Open { sub, pull: None };
        self.sub_had_event = false;
        let consumer_arn = consumer_arn.clone();
        self.backpressure_at = Some(at(now, *backpressure_timeout));
        self.subscribe_calls += 1;
        self.last_subscribe_at = Some(now);
        self.wake = None;
        Some(Action::Subscribe {
            sub,
            shard: self.shard.clone(),
            consumer_arn,
            position: self.position.clone(),
            range: self.range,
        })
    }

    /// No subscription: subscribe again at `due`, but never sooner than 1 s
    /// after the previous SubscribeToShard or 5 s after a ResourceInUse.
    fn efo_idle(&mut self, now: Instant, due: Instant, on_credit: bool) {
        let mut due = due;
        if let Some(t) = self.last_subscribe_at {
            due = due.max(at(t, SUBSCRIBE_MIN_SPACING));
        }
        if let Some(t) = self.resource_in_use_at {
            due = due.max(at(t, RESOURCE_IN_USE_HOLD_OFF));
        }
        if let State::Efo { state, .. } = &mut self.state {
            *state = EfoState::Idle { due, on_credit };
        }
        self.backpressure_at = None;
        self.idle_at = None;
        let reason = if on_credit {
            "resubscribe after backpressure"
        } else {
            "subscribe"
        };
        self.set_wake(now, due, reason);
    }

    fn on_efo_event(&mut self, now: Instant, sub: SubId, chunk: ChunkId, data: Chunk) {
        self.backoff.reset();
        self.size.observe(&data);
        self.idle_at = None;
        // The end only on evidence: a null continuation, ChildShards, or (a
        // closed shard, for services that send neither) an event that
        // brought no Kinesis record at all, not its subscription's first,
        // whose continuation reached ListShards' EndingSequenceNumber. An
        // event whose records were all filtered out (KPL sub-records of
        // another shard) is not empty. A record past that ending number
        // proves the listing was not of this shard (a stream deleted and
        // recreated under the same name reuses the shard ids): the mark is
        // dropped, not trusted.
        if let (Some(ending), Some(last)) = (&self.closed, data.records.last()) {
            if &last.ext.seq > ending {
                self.closed = None;
            }
        }
        let end = data.continuation.is_none()
            || !data.child_shards.is_empty()
            || (data.kinesis_records == 0
                && self.sub_had_event
                && self
                    .closed
                    .as_ref()
                    .is_some_and(|ending| data.continuation.as_ref().is_some_and(|c| c >= ending)));
        self.sub_had_event = true;
        self.awaiting = Some(Awaiting {
            chunk,
            next: data
                .continuation
                .as_ref()
                .map(|c| Self::resume_after(&self.position, c)),
        });
        let children = if end {
            data.child_shards.clone()
        } else {
            Vec::new()
        };
        // Moved, not cloned: the worker's input gave its chunk up to the
        // reader (`handle_input` takes it out of the input).
        self.events.push_back(ReaderEvent::Chunk { chunk, data });
        if end {
            self.out.push_back(Action::Cancel { sub });
            self.end(children);
            return;
        }
        if let State::Efo {
            backpressure_timeout,
            state,
            ..
        } = &mut self.state
        {
            *state = EfoState::Open { sub, pull: None };
            self.backpressure_at = Some(at(now, *backpressure_timeout));
        }
    }

    /// Where reading resumes after an EFO event with continuation `c`:
    /// after `c`, unless `position` is already past it. An event without
    /// records may carry a continuation behind the subscription's start
    /// (the record before it); resuming there would deliver checkpointed
    /// records again, or drop the KPL sub-sequence filter of an
    /// `AtSubSequence` start.
    fn resume_after(position: &StartPosition, c: &SeqNum) -> StartPosition {
        let behind = match position {
            StartPosition::AtSequence(s) | StartPosition::AfterSequence(s) => c < s,
            StartPosition::AtSubSequence(e) => *c < e.seq,
            StartPosition::TrimHorizon
            | StartPosition::Latest
            | StartPosition::AtTimestamp { .. } => false,
        };
        if behind {
            position.clone()
        } else {
            StartPosition::AfterSequence(c.clone())
        }
    }

    fn on_records(
        &mut self,
        now: Instant,
        chunk: ChunkId,
        data: Chunk,
        next: Option<ShardIterator>,
    ) {
        self.backoff.reset();
        self.size.observe(&data);
        let after = data.records.last().map(|r| {
            if r.last_sub {
                StartPosition::AfterSequence(r.ext.seq.clone())
            } else {
                StartPosition::AtSubSequence(r.ext.clone())
            }
        });
        self.awaiting = Some(Awaiting { chunk, next: after });
        let idle = data.records.is_empty() && data.millis_behind == 0;
        let end = next.is_none() || !data.child_shards.is_empty();
        let children = if end {
            data.child_shards.clone()
        } else {
            Vec::new()
        };
        // Moved, not cloned (see `on_efo_event`).
        self.events.push_back(ReaderEvent::Chunk { chunk, data });
        match next {
            Some(iterator) if !end => {
                let due = self.next_get_due(now, idle);
                self.poll_ready(now, iterator, due);
            }
            _ => self.end(children),
        }
    }

    /// When the next GetRecords may go: `min_interval` after the previous
    /// one, or `idle_interval` from now after an empty caught-up response.
    fn next_get_due(&self, now: Instant, idle: bool) -> Instant {
        let State::Polling {
            idle_interval,
            min_interval,
            last_get_at,
            ..
        } = &self.state
        else {
            return now;
        };
        let spaced = last_get_at.map_or(now, |t| at(t, *min_interval)).max(now);
        if idle {
            spaced.max(at(now, *idle_interval))
        } else {
            spaced
        }
    }

    fn poll_ready(&mut self, now: Instant, iterator: ShardIterator, due: Instant) {
        if let State::Polling { state, .. } = &mut self.state {
            *state = PollState::Ready { iterator, due };
        }
        self.set_wake(now, due, "get records");
    }

    fn poll_need_iterator(&mut self, now: Instant, due: Instant) {
        if let State::Polling { state, .. } = &mut self.state {
            *state = PollState::NeedIterator { due };
        }
        self.set_wake(now, due, "get shard iterator");
    }

    /// Classify a failed read. Returns when to retry, or `None` when the
    /// shard failed. `positioned`: the call started at the resume position
    /// (SubscribeToShard, GetShardIterator), so an InvalidArgument may mean
    /// a stored position past retention.
    fn retry_after(
        &mut self,
        now: Instant,
        class: ErrorClass,
        positioned: bool,
    ) -> Option<Instant> {
        match class {
            ErrorClass::ResourceNotFound => {
                self.fail(class);
                None
            }
            ErrorClass::InvalidArgument
                if positioned && self.position_is_stored && !self.fell_back =>
            {
                self.events.push_back(ReaderEvent::Warning(format!(
                    "{}: checkpoint {} is past retention (InvalidArgument), falling back to \
                     TRIM_HORIZON; records between it and the oldest retained record are lost",
                    self.shard,
                    self.position.sequence_number().map_or("?", |s| s.as_str()),
                )));
                self.position = StartPosition::TrimHorizon;
                self.position_is_stored = false;
                self.fell_back = true;
                Some(now)
            }
            ErrorClass::InvalidArgument => {
                self.fail(class);
                None
            }
            _ => {
                if class == ErrorClass::ResourceInUse {
                    self.resource_in_use_at = Some(now);
                }
                if class == ErrorClass::AccessDenied && self.backoff.attempt() == 0 {
                    self.events.push_back(ReaderEvent::Warning(format!(
                        "{}: access denied reading the shard; retrying. Grant the consumer's \
                         role kinesis:SubscribeToShard / kinesis:GetShardIterator / \
                         kinesis:GetRecords on the stream",
                        self.shard
                    )));
                }
                Some(at(now, self.backoff.next_delay(&mut self.rng)))
            }
        }
    }

    fn end(&mut self, children: Vec<ChildShard>) {
        self.phase = Phase::Ended;
        self.wake = None;
        self.backpressure_at = None;
        self.events.push_back(ReaderEvent::End { children });
    }

    fn fail(&mut self, class: ErrorClass) {
        self.phase = Phase::Failed;
        self.wake = None;
        self.backpressure_at = None;
        self.events.push_back(ReaderEvent::Failed { class });
    }

    fn set_wake(&mut self, now: Instant, due: Instant, reason: &'static str) {
        self.wake = (due > now).then_some((due, reason));
    }
}

/// `t + d`, saturating far in the future instead of overflowing (a huge
/// configured duration must not panic).
pub(crate) fn at(t: Instant, d: Duration) -> Instant {
    t.checked_add(d)
        .or_else(|| t.checked_add(Duration::from_secs(100 * 365 * 24 * 3600)))
        .unwrap_or(t)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ids::{ShardId, StreamId};
    use crate::io::RecordMeta;
    use crate::kpl::HashRange;
    use crate::sequence::{ExtSeq, SeqNum};

    const SEED: u64 = 7;
    const ARN: &str = "arn:aws:kinesis:us-east-1:1:stream/s/consumer/app:1";

    fn ms(v: u64) -> Duration {
        Duration::from_millis(v)
    }
    fn secs(v: u64) -> Duration {
        Duration::from_secs(v)
    }
    fn sref() -> ShardRef {
        ShardRef::new(StreamId::new("s"), ShardId::new("shardId-000000000001"))
    }
    fn seq(s: &str) -> SeqNum {
        SeqNum::parse(s).unwrap()
    }
    fn rec(s: &str, sub: u32, last_sub: bool) -> RecordMeta {
        RecordMeta {
            ext: ExtSeq::new(seq(s), sub),
            last_sub,
            bytes: 10,
            arrival_ms: 0,
        }
    }
    fn chunk(records: Vec<RecordMeta>, continuation: Option<&str>) -> Chunk {
        Chunk {
            kinesis_records: records.len() as u32,
            records,
            millis_behind: 0,
            continuation: continuation.map(seq),
            child_shards: vec![],
        }
    }
    fn child(id: &str) -> ChildShard {
        ChildShard {
            shard: ShardId::new(id),
            parents: vec![ShardId::new("shardId-000000000001")],
            hash_range: HashRange::FULL,
        }
    }
    /// The delays a fresh reader's backoff hands out, in order.
    fn delays(n: usize) -> Vec<Duration> {
        let mut rng = Rng::new(SEED);
        let mut b = Backoff::new();
        (0..n).map(|_| b.next_delay(&mut rng)).collect()
    }

    struct H {
        r: ShardReader,
        mint: IdMint,
    }

    impl H {
        fn efo(start: StartPosition, now: Instant) -> H {
            let mode = ReaderMode::Efo {
                consumer_arn: Some(ARN.into()),
                backpressure_timeout: secs(30),
                idle_timeout: secs(30),
            };
            H {
                r: ShardReader::new(sref(), start, mode, SEED, now),
                mint: IdMint::default(),
            }
        }
        fn polling(start: StartPosition, now: Instant) -> H {
            let mode = ReaderMode::Polling {
                idle_interval: secs(1),
                min_interval: ms(200),
                max_records: 100,
            };
            H {
                r: ShardReader::new(sref(), start, mode, SEED, now),
                mint: IdMint::default(),
            }
        }
        fn actions(&mut self, now: Instant) -> Vec<Action> {
            std::iter::from_fn(|| self.r.poll_action(now, &mut self.mint)).collect()
        }
        fn events(&mut self) -> Vec<ReaderEvent> {
            std::iter::from_fn(|| self.r.poll_event()).collect()
        }
        fn grant(&mut self, now: Instant, limit: u32) -> Option<Action> {
            self.r.grant(now, limit, &mut self.mint)
        }
        /// Expect exactly one Subscribe at `now` from `position`.
        fn subscribed(&mut self, now: Instant, position: StartPosition) -> SubId {
            let acts = self.actions(now);
            let [Action::Subscribe { sub, .. }] = acts.as_slice() else {
                panic!("expected one Subscribe, got {acts:?}");
            };
            let sub = *sub;
            assert_eq!(
                acts,
                vec![Action::Subscribe {
                    sub,
                    shard: sref(),
                    consumer_arn: ARN.into(),
                    position,
                    range: HashRange::FULL,
                }]
            );
            sub
        }
        /// Grant credit to an open subscription: the Pull's chunk.
        fn pull(&mut self, now: Instant, sub: SubId) -> ChunkId {
            let Some(Action::Pull { sub: s, chunk }) = self.grant(now, 1000) else {
                panic!("expected a Pull");
            };
            assert_eq!(s, sub);
            chunk
        }
        /// Deliver an event for the outstanding Pull; returns the events.
        fn event(
            &mut self,
            now: Instant,
            sub: SubId,
            chunk: ChunkId,
            data: Chunk,
        ) -> Vec<ReaderEvent> {
            assert!(self
                .r
                .handle_input(now, &mut Input::SubscriptionEvent { sub, chunk, data }));
            self.events()
        }
        fn sub_error(&mut self, now: Instant, sub: SubId, class: ErrorClass) {
            assert!(self
                .r
                .handle_input(now, &mut Input::SubscriptionError { sub, class }));
        }
        /// Polling: expect one GetShardIterator from `position` and answer it.
        fn iterator(&mut self, now: Instant, position: StartPosition, it: &str) {
            let acts = self.actions(now);
            let [Action::GetShardIterator { op, .. }] = acts.as_slice() else {
                panic!("expected one GetShardIterator, got {acts:?}");
            };
            let op = *op;
            assert_eq!(
                acts,
                vec![Action::GetShardIterator {
                    op,
                    shard: sref(),
                    position
                }]
            );
            let result = Ok(ShardIterator(it.into()));
            assert!(self
                .r
                .handle_input(now, &mut Input::Iterator { op, result }));
        }
        /// Polling: grant and return (op, chunk, action).
        fn get_records(&mut self, now: Instant, limit: u32) -> (OpId, ChunkId, Action) {
            let a = self.grant(now, limit).expect("GetRecords");
            let Action::GetRecords { op, chunk, .. } = &a else {
                panic!("expected GetRecords, got {a:?}");
            };
            (*op, *chunk, a.clone())
        }
        fn records(
            &mut self,
            now: Instant,
            op: OpId,
            data: Chunk,
            next: Option<&str>,
        ) -> Vec<ReaderEvent> {
            let result = Ok((data, next.map(|n| ShardIterator(n.into()))));
            assert!(self.r.handle_input(now, &mut Input::Records { op, result }));
            self.events()
        }
    }

    // ----- EFO ---------------------------------------------------------------

    #[test]
    fn subscribes_only_once_consumer_arn_is_known() {
        let t0 = crate::test_epoch();
        let mode = ReaderMode::Efo {
            consumer_arn: None,
            backpressure_timeout: DEFAULT_BACKPRESSURE_TIMEOUT,
            idle_timeout: secs(30),
        };
        let mut h = H {
            r: ShardReader::new(sref(), StartPosition::TrimHorizon, mode, SEED, t0),
            mint: IdMint::default(),
        };
        assert_eq!(h.actions(t0 + secs(10)), vec![]);
        assert!(!h.r.wants_credit(t0 + secs(10)));
        assert_eq!(h.r.poll_timeout(), None);
        assert_eq!(h.r.state_name(), "awaiting-consumer");
        h.r.set_consumer_arn(ARN.into());
        let sub = h.subscribed(t0 + secs(10), StartPosition::TrimHorizon);
        assert!(h.r.wants_credit(t0 + secs(10)));
        assert_eq!(
            h.grant(t0 + secs(10), 0),
            Some(Action::Pull {
                sub,
                chunk: ChunkId::from_raw(2)
            })
        );
        assert!(h.r.holds_credit());
        assert!(!h.r.wants_credit(t0 + secs(10)));
        assert_eq!(h.grant(t0 + secs(10), 0), None);
        assert_eq!(h.r.subscribe_calls(), 1);
        assert_eq!(h.r.last_subscribe_at(), Some(t0 + secs(10)));
    }

    #[test]
    fn subscribe_never_sooner_than_one_second_after_previous() {
        let t0 = crate::test_epoch();
        let mut h = H::efo(StartPosition::TrimHorizon, t0);
        let sub = h.subscribed(t0, StartPosition::TrimHorizon);
        // A transient error 200 ms later: the backoff (at most 450 ms) would
        // allow t0+650ms at the latest, the 1 s rule says t0+1s.
        h.sub_error(t0 + ms(200), sub, ErrorClass::Transient);
        assert!(ms(200) + delays(1)[0] < secs(1));
        assert_eq!(h.r.poll_timeout(), Some((t0 + secs(1), "subscribe")));
        assert_eq!(h.actions(t0 + ms(999)), vec![]);
        h.r.handle_timeout(t0 + secs(1));
        assert_eq!(h.r.poll_timeout(), None);
        h.subscribed(t0 + secs(1), StartPosition::TrimHorizon);
        assert_eq!(h.r.subscribe_calls(), 2);
    }

    #[test]
    fn resubscribe_waits_five_seconds_after_resource_in_use() {
        let t0 = crate::test_epoch();
        let mut h = H::efo(StartPosition::TrimHorizon, t0);
        let sub = h.subscribed(t0, StartPosition::TrimHorizon);
        let _ = h.pull(t0, sub);
        h.sub_error(t0 + ms(100), sub, ErrorClass::ResourceInUse);
        let due = t0 + ms(100) + secs(5);
        assert_eq!(h.r.poll_timeout(), Some((due, "subscribe")));
        assert!(!h.r.holds_credit());
        assert_eq!(h.actions(due - ms(1)), vec![]);
        h.subscribed(due, StartPosition::TrimHorizon);
    }

    #[test]
    fn resubscribes_immediately_after_normal_end_from_continuation() {
        let t0 = crate::test_epoch();
        let mut h = H::efo(StartPosition::TrimHorizon, t0);
        let sub = h.subscribed(t0, StartPosition::TrimHorizon);
        let c = h.pull(t0, sub);
        let data = chunk(vec![rec("10", 0, true), rec("20", 0, true)], Some("25"));
        let ev = h.event(t0 + secs(1), sub, c, data.clone());
        assert_eq!(ev, vec![ReaderEvent::Chunk { chunk: c, data }]);
        h.r.admitted(c);
        assert_eq!(
            h.r.resume_position(),
            Some(&StartPosition::AfterSequence(seq("25")))
        );
        let c2 = h.pull(t0 + secs(1), sub);
        let end = t0 + secs(300);
        assert!(h.r.handle_input(end, &mut Input::SubscriptionEnded { sub }));
        assert!(!h.r.holds_credit());
        let sub2 = h.subscribed(end, StartPosition::AfterSequence(seq("25")));
        assert_ne!(sub, sub2);
        assert_eq!(h.r.subscribe_calls(), 2);
        // The old subscription's Pull is answered with nothing: not ours.
        let mut stale = Input::SubscriptionEvent {
            sub,
            chunk: c2,
            data: Chunk::default(),
        };
        assert!(!h.r.handle_input(end, &mut stale));
    }

    #[test]
    fn empty_event_with_continuation_behind_the_start_keeps_the_position() {
        // Resuming inside a KPL aggregate (24, sub 1 checkpointed): an empty
        // first event whose continuation is the record before 24 must not
        // move the resume point back to AFTER 23, which would deliver 24/0
        // and 24/1 again. Same for a plain AFTER_SEQUENCE start.
        let t0 = crate::test_epoch();
        for start in [
            StartPosition::AtSubSequence(ExtSeq::new(seq("24"), 1)),
            StartPosition::AfterSequence(seq("24")),
            StartPosition::AtSequence(seq("24")),
        ] {
            let mut h = H::efo(start.clone(), t0);
            let sub = h.subscribed(t0, start.clone());
            let c = h.pull(t0, sub);
            h.event(t0 + secs(1), sub, c, chunk(vec![], Some("23")));
            h.r.admitted(c);
            assert_eq!(h.r.resume_position(), Some(&start), "{start:?}");
            // A continuation at or past the start moves on as usual.
            let c2 = h.pull(t0 + secs(1), sub);
            h.event(t0 + secs(2), sub, c2, chunk(vec![], Some("24")));
            h.r.admitted(c2);
            assert_eq!(
                h.r.resume_position(),
                Some(&StartPosition::AfterSequence(seq("24"))),
                "{start:?}"
            );
        }
    }

    #[test]
    fn resubscription_waits_until_last_chunk_is_admitted() {
        let t0 = crate::test_epoch();
        let mut h = H::efo(StartPosition::TrimHorizon, t0);
        let sub = h.subscribed(t0, StartPosition::TrimHorizon);
        let c = h.pull(t0, sub);
        h.event(
            t0 + secs(1),
            sub,
            c,
            chunk(vec![rec("10", 0, true)], Some("11")),
        );
        assert!(!h.r.wants_credit(t0 + secs(1)), "a chunk awaits admission");
        assert!(h
            .r
            .handle_input(t0 + secs(2), &mut Input::SubscriptionEnded { sub }));
        assert_eq!(h.actions(t0 + secs(3)), vec![]);
        assert_eq!(h.r.poll_timeout(), None);
        h.r.admitted(ChunkId::from_raw(999)); // not ours: ignored
        assert_eq!(h.actions(t0 + secs(3)), vec![]);
        h.r.admitted(c);
        h.subscribed(t0 + secs(3), StartPosition::AfterSequence(seq("11")));
    }

    #[test]
    fn resource_not_found_is_fatal_for_shard() {
        let t0 = crate::test_epoch();
        let mut h = H::efo(StartPosition::TrimHorizon, t0);
        let sub = h.subscribed(t0, StartPosition::TrimHorizon);
        h.sub_error(t0 + ms(50), sub, ErrorClass::ResourceNotFound);
        assert_eq!(
            h.events(),
            vec![ReaderEvent::Failed {
                class: ErrorClass::ResourceNotFound
            }]
        );
        assert_eq!(h.actions(t0 + secs(60)), vec![]);
        assert_eq!(h.r.poll_timeout(), None);
        assert!(!h.r.wants_credit(t0 + secs(60)));
        assert!(!h.r.is_reading());
        assert_eq!(h.r.state_name(), "failed");
        assert!(!h
            .r
            .handle_input(t0 + secs(1), &mut Input::SubscriptionEnded { sub }));
        assert_eq!(h.r.stop(), None);
    }

    #[test]
    fn invalid_argument_without_stored_position_is_fatal() {
        let t0 = crate::test_epoch();
        let mut h = H::efo(StartPosition::AtTimestamp { unix_ms: 5 }, t0);
        let sub = h.subscribed(t0, StartPosition::AtTimestamp { unix_ms: 5 });
        h.sub_error(t0, sub, ErrorClass::InvalidArgument);
        assert_eq!(
            h.events(),
            vec![ReaderEvent::Failed {
                class: ErrorClass::InvalidArgument
            }]
        );
    }

    #[test]
    fn position_past_retention_falls_back_to_trim_horizon_once() {
        let t0 = crate::test_epoch();
        let stored = StartPosition::AfterSequence(seq("4242"));
        let mut h = H::efo(stored.clone(), t0);
        let sub = h.subscribed(t0, stored);
        h.sub_error(t0 + ms(100), sub, ErrorClass::InvalidArgument);
        let ev = h.events();
        let [ReaderEvent::Warning(w)] = ev.as_slice() else {
            panic!("expected a warning, got {ev:?}");
        };
        assert!(
            w.contains("4242") && w.contains("past retention") && w.contains("TRIM_HORIZON"),
            "{w}"
        );
        assert_eq!(h.r.resume_position(), Some(&StartPosition::TrimHorizon));
        // Still subject to the 1 s rule.
        assert_eq!(h.actions(t0 + ms(999)), vec![]);
        let sub = h.subscribed(t0 + secs(1), StartPosition::TrimHorizon);
        h.sub_error(t0 + secs(1), sub, ErrorClass::InvalidArgument);
        assert_eq!(
            h.events(),
            vec![ReaderEvent::Failed {
                class: ErrorClass::InvalidArgument
            }]
        );
        assert_eq!(h.actions(t0 + secs(10)), vec![]);
    }

    #[test]
    fn invalid_argument_after_progress_is_fatal() {
        let t0 = crate::test_epoch();
        let stored = StartPosition::AtSubSequence(ExtSeq::new(seq("7"), 2));
        let mut h = H::efo(stored.clone(), t0);
        let sub = h.subscribed(t0, stored);
        let c = h.pull(t0, sub);
        h.event(
            t0 + secs(1),
            sub,
            c,
            chunk(vec![rec("7", 3, true)], Some("8")),
        );
        h.r.admitted(c);
        h.sub_error(t0 + secs(2), sub, ErrorClass::InvalidArgument);
        assert_eq!(
            h.events(),
            vec![ReaderEvent::Failed {
                class: ErrorClass::InvalidArgument
            }]
        );
    }

    #[test]
    fn silent_subscription_is_cancelled_and_resubscribed_after_the_idle_timeout() {
        // A half-open connection: the Pull is outstanding and no event ever
        // comes. The reader must not wait for ever.
        let t0 = crate::test_epoch();
        let mut h = H::efo(StartPosition::TrimHorizon, t0);
        let sub = h.subscribed(t0, StartPosition::TrimHorizon);
        let c = h.pull(t0, sub);
        let data = chunk(vec![rec("4", 0, true)], Some("4"));
        assert_eq!(h.event(t0 + secs(1), sub, c, data).len(), 1);
        h.r.admitted(c);
        let _silent = h.pull(t0 + secs(1), sub);
        assert_eq!(
            h.r.poll_timeout(),
            Some((t0 + secs(31), "subscription idle")),
            "the watchdog runs while the read is outstanding"
        );
        h.r.handle_timeout(t0 + secs(30));
        assert!(h.actions(t0 + secs(30)).is_empty(), "not yet");
        h.r.handle_timeout(t0 + secs(31));
        let acts = h.actions(t0 + secs(31));
        assert_eq!(acts, vec![Action::Cancel { sub }]);
        assert!(
            !h.r.holds_credit(),
            "the silent read's credit is given back"
        );
        assert!(matches!(
            h.r.poll_event(),
            Some(ReaderEvent::Warning(w)) if w.contains("resubscribing")
        ));
        // Resubscribed from the resume position after a transient backoff.
        let (due, _) = h.r.poll_timeout().expect("a resubscription is due");
        assert!(due > t0 + secs(31) && due <= t0 + secs(41), "{due:?}");
        let sub2 = h.subscribed(due, StartPosition::AfterSequence(seq("4")));
        assert_ne!(sub2, sub);
    }

    #[test]
    fn backpressure_timeout_cancels_and_resumes_from_last_delivered() {
        let t0 = crate::test_epoch();
        let mut h = H::efo(StartPosition::TrimHorizon, t0);
        let sub = h.subscribed(t0, StartPosition::TrimHorizon);
        assert_eq!(
            h.r.poll_timeout(),
            Some((t0 + secs(30), "backpressure timeout"))
        );
        let c = h.pull(t0, sub);
        assert_eq!(
            h.r.poll_timeout(),
            Some((t0 + secs(30), "subscription idle")),
            "a Pull is outstanding: no backpressure timer, only the idle watchdog"
        );
        h.event(
            t0 + secs(1),
            sub,
            c,
            chunk(vec![rec("10", 0, true)], Some("200")),
        );
        h.r.admitted(c);
        // No credit from here on.
        let stall = t0 + secs(31);
        assert_eq!(h.r.poll_timeout(), Some((stall, "backpressure timeout")));
        h.r.handle_timeout(stall - ms(1));
        assert_eq!(h.actions(stall - ms(1)), vec![]);
        h.r.handle_timeout(stall);
        assert_eq!(h.actions(stall), vec![Action::Cancel { sub }]);
        assert_eq!(h.r.state_name(), "parked");
        // Parked: no subscription without credit, whatever the time.
        let resume = stall + delays(1)[0];
        assert_eq!(
            h.r.poll_timeout(),
            Some((resume, "resubscribe after backpressure"))
        );
        assert!(!h.r.wants_credit(resume - ms(1)));
        assert_eq!(h.actions(resume + secs(100)), vec![]);
        h.r.handle_timeout(resume);
        assert_eq!(h.r.poll_timeout(), None);
        // Credit again (much later): subscribe from the last delivered record, then pull.
        let later = resume + secs(100);
        assert!(h.r.wants_credit(later));
        let Some(Action::Subscribe {
            sub: sub2,
            position,
            ..
        }) = h.grant(later, 10)
        else {
            panic!("expected a Subscribe");
        };
        assert_eq!(position, StartPosition::AfterSequence(seq("200")));
        let acts = h.actions(later);
        let [Action::Pull { sub: s, chunk: c2 }] = acts.as_slice() else {
            panic!("expected the Pull behind the Subscribe, got {acts:?}");
        };
        assert_eq!(*s, sub2);
        assert!(h.r.holds_credit());
        assert_eq!(
            h.r.poll_timeout(),
            Some((later + secs(30), "subscription idle"))
        );
        assert_eq!(h.r.subscribe_calls(), 2);
        // The cancelled subscription's inputs are not ours.
        assert!(!h
            .r
            .handle_input(later, &mut Input::SubscriptionEnded { sub }));
        let ev = h.event(
            later + secs(1),
            sub2,
            *c2,
            chunk(vec![rec("300", 0, true)], Some("301")),
        );
        assert_eq!(ev.len(), 1);
    }

    #[test]
    fn backpressure_resubscribe_respects_one_second_rule_after_error() {
        let t0 = crate::test_epoch();
        let mut h = H::efo(StartPosition::TrimHorizon, t0);
        let sub = h.subscribed(t0, StartPosition::TrimHorizon);
        h.r.handle_timeout(t0 + secs(30));
        assert_eq!(h.actions(t0 + secs(30)), vec![Action::Cancel { sub }]);
        let Some(Action::Subscribe { sub: sub2, .. }) = h.grant(t0 + secs(40), 10) else {
            panic!("expected a Subscribe");
        };
        let _ = h.actions(t0 + secs(40));
        h.sub_error(t0 + secs(40), sub2, ErrorClass::Transient);
        assert!(!h.r.wants_credit(t0 + secs(41)), "not parked any more");
        h.subscribed(t0 + secs(41), StartPosition::TrimHorizon);
    }

    #[test]
    fn null_continuation_means_shard_end() {
        let t0 = crate::test_epoch();
        let mut h = H::efo(StartPosition::TrimHorizon, t0);
        let sub = h.subscribed(t0, StartPosition::TrimHorizon);
        let c = h.pull(t0, sub);
        let mut data = chunk(vec![rec("10", 0, true)], None);
        data.child_shards = vec![child("shardId-000000000002"), child("shardId-000000000003")];
        let ev = h.event(t0 + secs(1), sub, c, data.clone());
        assert_eq!(
            ev,
            vec![
                ReaderEvent::Chunk { chunk: c, data },
                ReaderEvent::End {
                    children: vec![child("shardId-000000000002"), child("shardId-000000000003")]
                },
            ]
        );
        assert!(h.r.is_ended());
        assert_eq!(h.r.resume_position(), None);
        assert_eq!(h.actions(t0 + secs(1)), vec![Action::Cancel { sub }]);
        assert!(!h.r.wants_credit(t0 + secs(2)));
        assert_eq!(h.r.poll_timeout(), None);
        assert!(!h
            .r
            .handle_input(t0 + secs(2), &mut Input::SubscriptionEnded { sub }));
        h.r.admitted(c);
        assert_eq!(h.r.stop(), None);
    }

    #[test]
    fn child_shards_mean_shard_end_even_with_continuation() {
        let t0 = crate::test_epoch();
        let mut h = H::efo(StartPosition::TrimHorizon, t0);
        let sub = h.subscribed(t0, StartPosition::TrimHorizon);
        let c = h.pull(t0, sub);
        let mut data = chunk(vec![], Some("99"));
        data.child_shards = vec![child("shardId-000000000002")];
        let ev = h.event(t0 + secs(1), sub, c, data);
        assert_eq!(
            ev.last(),
            Some(&ReaderEvent::End {
                children: vec![child("shardId-000000000002")]
            })
        );
    }

    #[test]
    fn empty_first_event_on_a_closed_shard_is_not_its_end() {
        // A subscription to a closed shard that opens with an empty event
        // (the records follow): ending there would checkpoint SHARD_END
        // over records never delivered.
        let t0 = crate::test_epoch();
        let mut h = H::efo(StartPosition::TrimHorizon, t0);
        h.r.mark_closed(seq("6"));
        let sub = h.subscribed(t0, StartPosition::TrimHorizon);
        let c = h.pull(t0, sub);
        let ev = h.event(t0 + secs(1), sub, c, chunk(vec![], Some("5")));
        assert_eq!(ev.len(), 1, "the empty chunk only, no End: {ev:?}");
        h.r.admitted(c);
        let c = h.pull(t0 + secs(1), sub);
        let data = chunk(vec![rec("6", 0, true)], Some("6"));
        assert_eq!(h.event(t0 + secs(2), sub, c, data).len(), 1);
        h.r.admitted(c);
        let c = h.pull(t0 + secs(2), sub);
        let ev = h.event(t0 + secs(3), sub, c, chunk(vec![], Some("6")));
        assert_eq!(
            ev.last(),
            Some(&ReaderEvent::End { children: vec![] }),
            "a later empty event is the end"
        );
    }

    #[test]
    fn event_whose_records_were_all_filtered_out_is_not_a_closed_shards_end() {
        // A closed shard's event holding only KPL sub-records of another
        // shard (dropped by the runtime's range filter) has no user record,
        // but it is not empty: ending there would write SHARD_END over the
        // records after it.
        let t0 = crate::test_epoch();
        let mut h = H::efo(StartPosition::TrimHorizon, t0);
        h.r.mark_closed(seq("9"));
        let sub = h.subscribed(t0, StartPosition::TrimHorizon);
        let c = h.pull(t0, sub);
        let data = chunk(vec![rec("4", 0, true)], Some("4"));
        assert_eq!(h.event(t0 + secs(1), sub, c, data).len(), 1);
        h.r.admitted(c);
        let c = h.pull(t0 + secs(1), sub);
        let filtered = Chunk {
            kinesis_records: 1,
            ..chunk(vec![], Some("5"))
        };
        let ev = h.event(t0 + secs(2), sub, c, filtered);
        assert_eq!(ev.len(), 1, "a chunk, no End: {ev:?}");
        h.r.admitted(c);
        // An empty event behind the ending sequence number is no end either.
        let c = h.pull(t0 + secs(2), sub);
        let ev = h.event(t0 + secs(3), sub, c, chunk(vec![], Some("5")));
        assert_eq!(ev.len(), 1, "continuation 5 < ending 9: {ev:?}");
        h.r.admitted(c);
        let c = h.pull(t0 + secs(3), sub);
        let ev = h.event(t0 + secs(4), sub, c, chunk(vec![], Some("9")));
        assert_eq!(ev.last(), Some(&ReaderEvent::End { children: vec![] }));
    }

    #[test]
    fn a_record_past_the_listed_ending_number_unmarks_the_shard_closed() {
        // A listing of an earlier stream of the same name (deleted and
        // recreated since) says shardId-0 closed at 6; the shard read now
        // is the new one, whose records go past 6. Its later empty events
        // are not its end (SHARD_END there would lose the rest).
        let t0 = crate::test_epoch();
        let mut h = H::efo(StartPosition::TrimHorizon, t0);
        h.r.mark_closed(seq("6"));
        let sub = h.subscribed(t0, StartPosition::TrimHorizon);
        let c = h.pull(t0, sub);
        let data = chunk(vec![rec("9", 0, true)], Some("9"));
        assert_eq!(h.event(t0 + secs(1), sub, c, data).len(), 1);
        h.r.admitted(c);
        let c = h.pull(t0 + secs(1), sub);
        let ev = h.event(t0 + secs(2), sub, c, chunk(vec![], Some("10")));
        assert_eq!(ev.len(), 1, "an empty event, not the end: {ev:?}");
    }

    #[test]
    fn closed_shard_learned_from_list_shards_ends_on_empty_event() {
        let t0 = crate::test_epoch();
        let mut h = H::efo(StartPosition::TrimHorizon, t0);
        let sub = h.subscribed(t0, StartPosition::TrimHorizon);
        // Not known closed: an empty event is just an empty event.
        let c = h.pull(t0, sub);
        let empty = chunk(vec![], Some("5"));
        let ev = h.event(t0 + secs(1), sub, c, empty.clone());
        assert_eq!(
            ev,
            vec![ReaderEvent::Chunk {
                chunk: c,
                data: empty.clone()
            }]
        );
        h.r.admitted(c);
        h.r.mark_closed(seq("6"));
        let c = h.pull(t0 + secs(1), sub);
        let data = chunk(vec![rec("6", 0, true)], Some("6"));
        assert_eq!(
            h.event(t0 + secs(2), sub, c, data).len(),
            1,
            "records: not the end"
        );
        h.r.admitted(c);
        let c = h.pull(t0 + secs(2), sub);
        let ev = h.event(t0 + secs(3), sub, c, chunk(vec![], Some("6")));
        assert_eq!(
            ev,
            vec![
                ReaderEvent::Chunk {
                    chunk: c,
                    data: chunk(vec![], Some("6"))
                },
                ReaderEvent::End { children: vec![] },
            ]
        );
        assert_eq!(h.actions(t0 + secs(3)), vec![Action::Cancel { sub }]);
    }

    #[test]
    fn transient_errors_back_off_and_a_chunk_resets_the_backoff() {
        let t0 = crate::test_epoch();
        let mut h = H::efo(StartPosition::TrimHorizon, t0);
        let d = {
            // Replay: 6 errors, then a chunk resets, then one more error.
            let mut rng = Rng::new(SEED);
            let mut b = Backoff::new();
            let mut v: Vec<Duration> = (0..6).map(|_| b.next_delay(&mut rng)).collect();
            b.reset();
            v.push(b.next_delay(&mut rng));
            v
        };
        let mut now = t0;
        let mut sub = h.subscribed(now, StartPosition::TrimHorizon);
        for delay in &d[..6] {
            h.sub_error(now, sub, ErrorClass::Throttled);
            let due = (now + *delay).max(h.r.last_subscribe_at().unwrap() + secs(1));
            assert_eq!(h.r.poll_timeout(), Some((due, "subscribe")));
            assert_eq!(h.actions(due - Duration::from_nanos(1)), vec![]);
            now = due;
            sub = h.subscribed(now, StartPosition::TrimHorizon);
        }
        assert!(
            d[5] > secs(1),
            "late attempts exceed the 1 s rule: {:?}",
            d[5]
        );
        let c = h.pull(now, sub);
        h.event(now + secs(1), sub, c, chunk(vec![], Some("3")));
        h.r.admitted(c);
        now += secs(3);
        h.sub_error(now, sub, ErrorClass::Transient);
        assert_eq!(h.r.poll_timeout(), Some((now + d[6], "subscribe")));
        assert!(d[6] <= ms(450));
    }

    #[test]
    fn access_denied_is_retried_and_reported() {
        let t0 = crate::test_epoch();
        let mut h = H::efo(StartPosition::TrimHorizon, t0);
        let sub = h.subscribed(t0, StartPosition::TrimHorizon);
        h.sub_error(t0, sub, ErrorClass::AccessDenied);
        let ev = h.events();
        assert!(
            matches!(ev.as_slice(), [ReaderEvent::Warning(w)] if w.contains("SubscribeToShard"))
        );
        let sub = h.subscribed(t0 + secs(1), StartPosition::TrimHorizon);
        h.sub_error(t0 + secs(1), sub, ErrorClass::AccessDenied);
        assert_eq!(h.events(), vec![], "reported once per error streak");
        assert!(h.r.is_reading());
    }

    #[test]
    fn awaits_names_the_open_subscription_until_it_ends_or_stops() {
        let t0 = crate::test_epoch();
        let mut h = H::efo(StartPosition::TrimHorizon, t0);
        assert_eq!(h.r.awaits(), None, "nothing asked yet");
        let sub = h.subscribed(t0, StartPosition::TrimHorizon);
        assert_eq!(h.r.awaits(), Some(Asked::Sub(sub)));
        h.pull(t0, sub);
        assert_eq!(
            h.r.awaits(),
            Some(Asked::Sub(sub)),
            "a Pull asks nothing new"
        );
        h.sub_error(t0, sub, ErrorClass::Transient);
        assert_eq!(h.r.awaits(), None, "between subscriptions");
        let sub = h.subscribed(t0 + secs(60), StartPosition::TrimHorizon);
        assert_eq!(h.r.awaits(), Some(Asked::Sub(sub)));
        h.r.stop();
        assert_eq!(h.r.awaits(), None, "stopped");
    }

    #[test]
    fn awaits_names_the_polling_op_in_flight_and_its_chunk() {
        let t0 = crate::test_epoch();
        let mut h = H::polling(StartPosition::TrimHorizon, t0);
        let acts = h.actions(t0);
        let [Action::GetShardIterator { op, .. }] = acts.as_slice() else {
            panic!("expected one GetShardIterator, got {acts:?}");
        };
        assert_eq!(
            h.r.awaits(),
            Some(Asked::Op {
                op: *op,
                chunk: None
            })
        );
        let result = Ok(ShardIterator("it".into()));
        assert!(h
            .r
            .handle_input(t0, &mut Input::Iterator { op: *op, result }));
        assert_eq!(h.r.awaits(), None, "holding an iterator");
        let (op, chunk, _) = h.get_records(t0, 10);
        assert_eq!(
            h.r.awaits(),
            Some(Asked::Op {
                op,
                chunk: Some(chunk)
            })
        );
        h.r.stop();
        assert_eq!(h.r.awaits(), None, "stopped");
    }

    #[test]
    fn stop_cancels_open_subscription_and_later_inputs_are_not_ours() {
        let t0 = crate::test_epoch();
        let mut h = H::efo(StartPosition::TrimHorizon, t0);
        let sub = h.subscribed(t0, StartPosition::TrimHorizon);
        let c = h.pull(t0, sub);
        assert_eq!(h.r.stop(), Some(Action::Cancel { sub }));
        assert_eq!(h.r.stop(), None);
        assert!(!h.r.holds_credit());
        let mut ev = Input::SubscriptionEvent {
            sub,
            chunk: c,
            data: chunk(vec![], Some("1")),
        };
        assert!(!h.r.handle_input(t0, &mut ev));
        assert_eq!(h.events(), vec![]);
        assert_eq!(h.actions(t0 + secs(10)), vec![]);
        assert_eq!(h.r.poll_timeout(), None);
        assert_eq!(h.r.state_name(), "stopped");
    }

    #[test]
    fn inputs_for_other_subscriptions_and_chunks_are_not_ours() {
        let t0 = crate::test_epoch();
        let mut h = H::efo(StartPosition::TrimHorizon, t0);
        let sub = h.subscribed(t0, StartPosition::TrimHorizon);
        let other = SubId::from_raw(999);
        let data = chunk(vec![], Some("1"));
        // No Pull outstanding: an event is unsolicited.
        let mut unsolicited = Input::SubscriptionEvent {
            sub,
            chunk: ChunkId::from_raw(5),
            data: data.clone(),
        };
        assert!(!h.r.handle_input(t0, &mut unsolicited));
        let c = h.pull(t0, sub);
        let mut wrong_chunk = Input::SubscriptionEvent {
            sub,
            chunk: ChunkId::from_raw(998),
            data: data.clone(),
        };
        assert!(!h.r.handle_input(t0, &mut wrong_chunk));
        let foreign = [
            Input::SubscriptionEvent {
                sub: other,
                chunk: c,
                data,
            },
            Input::SubscriptionEnded { sub: other },
            Input::SubscriptionError {
                sub: other,
                class: ErrorClass::ResourceNotFound,
            },
            Input::Iterator {
                op: OpId::from_raw(c.raw()),
                result: Err(ErrorClass::Transient),
            },
            Input::Records {
                op: OpId::from_raw(c.raw()),
                result: Err(ErrorClass::Transient),
            },
        ];
        for mut input in foreign {
            assert!(!h.r.handle_input(t0, &mut input), "{input:?}");
        }
        assert_eq!(h.events(), vec![]);
        assert!(h.r.holds_credit());
    }

    // ----- polling -------------------------------------------------------------

    #[test]
    fn polling_reads_only_with_credit_and_limit_follows_credit() {
        let t0 = crate::test_epoch();
        let mut h = H::polling(StartPosition::TrimHorizon, t0);
        assert!(!h.r.wants_credit(t0));
        assert_eq!(h.grant(t0, 10), None);
        h.iterator(t0, StartPosition::TrimHorizon, "it-1");
        assert!(h.r.wants_credit(t0));
        let (op, c, a) = h.get_records(t0, 5000);
        assert_eq!(
            a,
            Action::GetRecords {
                op,
                shard: sref(),
                iterator: ShardIterator("it-1".into()),
                limit: 100,
                chunk: c,
                skip_through: None,
                range: HashRange::FULL,
            }
        );
        assert!(h.r.holds_credit());
        assert!(
            !h.r.wants_credit(t0 + secs(5)),
            "one GetRecords in flight at most"
        );
        let data = chunk(vec![rec("1", 0, true)], None);
        h.records(t0 + ms(10), op, data, Some("it-2"));
        h.r.admitted(c);
        let (_, _, a) = h.get_records(t0 + secs(1), 0);
        assert!(matches!(a, Action::GetRecords { limit: 1, .. }), "{a:?}");
    }

    #[test]
    fn get_records_at_least_min_interval_apart() {
        let t0 = crate::test_epoch();
        let mut h = H::polling(StartPosition::TrimHorizon, t0);
        h.iterator(t0, StartPosition::TrimHorizon, "it-1");
        let (op, c, _) = h.get_records(t0, 50);
        h.records(
            t0 + ms(50),
            op,
            chunk(vec![rec("1", 0, true)], None),
            Some("it-2"),
        );
        h.r.admitted(c);
        assert_eq!(h.r.poll_timeout(), Some((t0 + ms(200), "get records")));
        assert!(!h.r.wants_credit(t0 + ms(199)));
        h.r.handle_timeout(t0 + ms(200));
        assert_eq!(h.r.poll_timeout(), None, "a fired wake-up is not repeated");
        assert!(h.r.wants_credit(t0 + ms(200)));
        let (_, _, a) = h.get_records(t0 + ms(200), 50);
        assert!(
            matches!(a, Action::GetRecords { iterator: ShardIterator(ref i), .. } if i == "it-2")
        );
    }

    #[test]
    fn idle_interval_after_empty_response() {
        let t0 = crate::test_epoch();
        let mut h = H::polling(StartPosition::TrimHorizon, t0);
        h.iterator(t0, StartPosition::TrimHorizon, "it-1");
        let (op, c, _) = h.get_records(t0, 50);
        let ev = h.records(t0 + ms(30), op, chunk(vec![], None), Some("it-2"));
        assert_eq!(
            ev.len(),
            1,
            "empty chunks are reported so the worker frees them"
        );
        h.r.admitted(c);
        assert_eq!(h.r.resume_position(), Some(&StartPosition::TrimHorizon));
        let due = t0 + ms(30) + secs(1);
        assert_eq!(h.r.poll_timeout(), Some((due, "get records")));
        assert!(!h.r.wants_credit(due - ms(1)));
        assert!(h.r.wants_credit(due));
    }

    #[test]
    fn empty_response_while_behind_polls_at_min_interval() {
        let t0 = crate::test_epoch();
        let mut h = H::polling(StartPosition::TrimHorizon, t0);
        h.iterator(t0, StartPosition::TrimHorizon, "it-1");
        let (op, c, _) = h.get_records(t0, 50);
        let mut data = chunk(vec![], None);
        data.millis_behind = 60_000;
        h.records(t0 + ms(30), op, data, Some("it-2"));
        h.r.admitted(c);
        assert!(h.r.wants_credit(t0 + ms(200)));
    }

    #[test]
    fn expired_iterator_refreshes_after_last_delivered_record() {
        let t0 = crate::test_epoch();
        let mut h = H::polling(StartPosition::TrimHorizon, t0);
        h.iterator(t0, StartPosition::TrimHorizon, "it-1");
        let (op, c, _) = h.get_records(t0, 50);
        let data = chunk(vec![rec("10", 0, true), rec("11", 0, true)], None);
        h.records(t0 + ms(10), op, data, Some("it-2"));
        h.r.admitted(c);
        let later = t0 + secs(400);
        let (op, _, _) = h.get_records(later, 50);
        let result = Err(ErrorClass::ExpiredIterator);
        assert!(h.r.handle_input(later, &mut Input::Records { op, result }));
        assert_eq!(h.events(), vec![]);
        h.iterator(later, StartPosition::AfterSequence(seq("11")), "it-3");
        let (_, _, a) = h.get_records(later + ms(200), 50);
        assert!(
            matches!(a, Action::GetRecords { iterator: ShardIterator(ref i), .. } if i == "it-3")
        );
    }

    #[test]
    fn absent_next_iterator_means_shard_end() {
        let t0 = crate::test_epoch();
        let mut h = H::polling(StartPosition::TrimHorizon, t0);
        h.iterator(t0, StartPosition::TrimHorizon, "it-1");
        let (op, c, _) = h.get_records(t0, 50);
        let mut data = chunk(vec![rec("10", 0, true)], None);
        data.child_shards = vec![child("shardId-000000000002")];
        let ev = h.records(t0 + ms(10), op, data.clone(), None);
        assert_eq!(
            ev,
            vec![
                ReaderEvent::Chunk { chunk: c, data },
                ReaderEvent::End {
                    children: vec![child("shardId-000000000002")]
                },
            ]
        );
        assert!(h.r.is_ended());
        assert_eq!(h.actions(t0 + secs(1)), vec![]);
        assert_eq!(h.r.stop(), None);
    }

    #[test]
    fn at_sub_sequence_start_skips_through_in_get_records() {
        let t0 = crate::test_epoch();
        let start = StartPosition::AtSubSequence(ExtSeq::new(seq("50"), 3));
        let mut h = H::polling(start.clone(), t0);
        h.iterator(t0, start, "it-1");
        let (op, c, a) = h.get_records(t0, 50);
        let want = Some(ExtSeq::new(seq("50"), 3));
        assert!(matches!(a, Action::GetRecords { ref skip_through, .. } if *skip_through == want));
        // An empty response leaves the position inside the aggregate.
        h.records(t0 + ms(10), op, chunk(vec![], None), Some("it-2"));
        h.r.admitted(c);
        let (op, c, a) = h.get_records(t0 + secs(2), 50);
        assert!(matches!(a, Action::GetRecords { ref skip_through, .. } if *skip_through == want));
        let data = chunk(vec![rec("50", 4, true), rec("60", 0, true)], None);
        h.records(t0 + secs(2), op, data, Some("it-3"));
        h.r.admitted(c);
        let (_, _, a) = h.get_records(t0 + secs(3), 50);
        assert!(
            matches!(
                a,
                Action::GetRecords {
                    skip_through: None,
                    ..
                }
            ),
            "{a:?}"
        );
    }

    #[test]
    fn resume_inside_an_aggregate_when_its_last_sub_record_was_filtered() {
        let t0 = crate::test_epoch();
        let mut h = H::polling(StartPosition::TrimHorizon, t0);
        h.iterator(t0, StartPosition::TrimHorizon, "it-1");
        let (op, c, _) = h.get_records(t0, 50);
        let data = chunk(vec![rec("50", 0, true), rec("60", 1, false)], None);
        h.records(t0 + ms(10), op, data, Some("it-2"));
        assert_eq!(
            h.r.resume_position(),
            Some(&StartPosition::TrimHorizon),
            "not admitted yet"
        );
        h.r.admitted(c);
        assert_eq!(
            h.r.resume_position(),
            Some(&StartPosition::AtSubSequence(ExtSeq::new(seq("60"), 1)))
        );
    }

    #[test]
    fn throttled_get_records_retries_same_iterator_with_backoff() {
        let t0 = crate::test_epoch();
        let mut h = H::polling(StartPosition::TrimHorizon, t0);
        h.iterator(t0, StartPosition::TrimHorizon, "it-1");
        let d = delays(2);
        let mut now = t0;
        for delay in &d {
            let (op, _, a) = h.get_records(now, 50);
            assert!(
                matches!(a, Action::GetRecords { iterator: ShardIterator(ref i), .. } if i == "it-1")
            );
            let result = Err(ErrorClass::Throttled);
            assert!(h.r.handle_input(now, &mut Input::Records { op, result }));
            let due = (now + *delay).max(now + ms(200));
            assert_eq!(h.r.poll_timeout(), Some((due, "get records")));
            assert!(!h.r.wants_credit(due - Duration::from_nanos(1)));
            now = due;
        }
        assert!(h.r.wants_credit(now));
    }

    #[test]
    fn get_shard_iterator_errors_back_off() {
        let t0 = crate::test_epoch();
        let mut h = H::polling(StartPosition::TrimHorizon, t0);
        let acts = h.actions(t0);
        let [Action::GetShardIterator { op, .. }] = acts.as_slice() else {
            panic!("{acts:?}");
        };
        let result = Err(ErrorClass::Transient);
        assert!(h
            .r
            .handle_input(t0, &mut Input::Iterator { op: *op, result }));
        let due = t0 + delays(1)[0];
        assert_eq!(h.r.poll_timeout(), Some((due, "get shard iterator")));
        assert_eq!(h.actions(due - ms(1)), vec![]);
        h.iterator(due, StartPosition::TrimHorizon, "it-1");
    }

    #[test]
    fn polling_position_past_retention_falls_back_to_trim_horizon_once() {
        let t0 = crate::test_epoch();
        let stored = StartPosition::AfterSequence(seq("77"));
        let mut h = H::polling(stored, t0);
        for expect_fail in [false, true] {
            let acts = h.actions(t0);
            let [Action::GetShardIterator { op, .. }] = acts.as_slice() else {
                panic!("{acts:?}");
            };
            let result = Err(ErrorClass::InvalidArgument);
            assert!(h
                .r
                .handle_input(t0, &mut Input::Iterator { op: *op, result }));
            let ev = h.events();
            if expect_fail {
                assert_eq!(
                    ev,
                    vec![ReaderEvent::Failed {
                        class: ErrorClass::InvalidArgument
                    }]
                );
            } else {
                assert!(matches!(ev.as_slice(), [ReaderEvent::Warning(w)] if w.contains("77")));
                assert_eq!(h.r.resume_position(), Some(&StartPosition::TrimHorizon));
            }
        }
        assert_eq!(h.actions(t0 + secs(5)), vec![]);
    }

    #[test]
    fn polling_resource_not_found_is_fatal() {
        let t0 = crate::test_epoch();
        let mut h = H::polling(StartPosition::TrimHorizon, t0);
        h.iterator(t0, StartPosition::TrimHorizon, "it-1");
        let (op, _, _) = h.get_records(t0, 50);
        let result = Err(ErrorClass::ResourceNotFound);
        assert!(h.r.handle_input(t0, &mut Input::Records { op, result }));
        assert_eq!(
            h.events(),
            vec![ReaderEvent::Failed {
                class: ErrorClass::ResourceNotFound
            }]
        );
        let result = Ok((Chunk::default(), None));
        assert!(
            !h.r.handle_input(t0, &mut Input::Records { op, result }),
            "after failure"
        );
    }

    #[test]
    fn stale_get_records_answer_after_stop_is_not_ours() {
        let t0 = crate::test_epoch();
        let mut h = H::polling(StartPosition::TrimHorizon, t0);
        h.iterator(t0, StartPosition::TrimHorizon, "it-1");
        let (op, _, _) = h.get_records(t0, 50);
        assert_eq!(h.r.stop(), None);
        let result = Ok((
            chunk(vec![rec("1", 0, true)], None),
            Some(ShardIterator("x".into())),
        ));
        assert!(!h.r.handle_input(t0, &mut Input::Records { op, result }));
        assert_eq!(h.events(), vec![]);
    }

    /// An answer to an op that is not the one in flight (a late answer to
    /// an earlier call) is not ours, while reading too (cargo-mutants
    /// survivors: the `o == op` guards).
    #[test]
    fn polling_answers_to_other_ops_are_not_ours() {
        let t0 = crate::test_epoch();
        let mut h = H::polling(StartPosition::TrimHorizon, t0);
        let acts = h.actions(t0);
        let [Action::GetShardIterator { op, .. }] = acts.as_slice() else {
            panic!("expected one GetShardIterator, got {acts:?}");
        };
        let other = OpId::from_raw(op.raw() + 1000);
        let result = Ok(ShardIterator("stale".into()));
        assert!(!h
            .r
            .handle_input(t0, &mut Input::Iterator { op: other, result }));
        assert_eq!(h.grant(t0, 50), None, "no iterator yet");
        let result = Ok(ShardIterator("it-1".into()));
        assert!(h
            .r
            .handle_input(t0, &mut Input::Iterator { op: *op, result }));
        let (op, _, _) = h.get_records(t0, 50);
        let other = OpId::from_raw(op.raw() + 1000);
        let result = Ok((
            chunk(vec![rec("1", 0, true)], None),
            Some(ShardIterator("x".into())),
        ));
        assert!(!h
            .r
            .handle_input(t0, &mut Input::Records { op: other, result }));
        assert_eq!(h.events(), vec![]);
        let events = h.records(t0, op, chunk(vec![rec("1", 0, true)], None), Some("it-2"));
        assert!(!events.is_empty());
    }

    #[test]
    fn huge_configured_intervals_do_not_panic() {
        let t0 = crate::test_epoch();
        let mode = ReaderMode::Polling {
            idle_interval: Duration::MAX,
            min_interval: Duration::MAX,
            max_records: 0,
        };
        let mut h = H {
            r: ShardReader::new(sref(), StartPosition::TrimHorizon, mode, SEED, t0),
            mint: IdMint::default(),
        };
        h.iterator(t0, StartPosition::TrimHorizon, "it-1");
        let (op, c, a) = h.get_records(t0, 50);
        assert!(matches!(a, Action::GetRecords { limit: 1, .. }), "{a:?}");
        h.records(t0, op, chunk(vec![], None), Some("it-2"));
        h.r.admitted(c);
        assert!(!h.r.wants_credit(t0 + secs(3600)));
        assert!(h.r.poll_timeout().is_some());
    }

    #[test]
    fn mode_from_config_carries_backpressure_timeout() {
        use crate::config::{EfoConsumer, Retrieval};
        use crate::ids::Owner;
        let mut config = Config::new(
            vec![StreamId::new("s")],
            Owner::new("w", 1),
            Retrieval::polling(),
        );
        assert_eq!(
            ReaderMode::from_config(&config, None),
            ReaderMode::Polling {
                idle_interval: secs(1),
                min_interval: ms(200),
                max_records: 10_000
            }
        );
        config.retrieval = Retrieval::Efo {
            consumer: EfoConsumer::Name("app".into()),
        };
        assert_eq!(
            ReaderMode::from_config(&config, Some(ARN.into())),
            ReaderMode::Efo {
                consumer_arn: Some(ARN.into()),
                backpressure_timeout: secs(30),
                idle_timeout: secs(30),
            }
        );
    }
    /// Kinesin-sim seed 843: a Pull reserved all the free room when it was
    /// the only reader asking (the boosted share); Pulls of quiet shards
    /// wait seconds for an event, so three shards asking after it had no
    /// room for 30 s. A Pull reserves the shard's largest recent event or
    /// the budget's fair share, never the boost.
    #[test]
    fn an_efo_pull_reserves_the_fair_share_not_all_the_free_room() {
        let t0 = crate::test_epoch();
        let mut h = H::efo(StartPosition::TrimHorizon, t0);
        h.r.size.records_per_read = 10;
        h.r.size.bytes_per_read = 1_000;
        h.r.size.observed = true;
        let room = PoolRoom {
            free: (40_000, 3 << 20),
            max: (50_000, 4 << 20),
            share: (40_000, 3 << 20),
            fair: (6_250, 512 << 10),
        };
        assert_eq!(
            h.r.read_plan(room),
            Some(ReadPlan {
                limit: 0,
                records: 6_250,
                bytes: 512 << 10
            })
        );
    }

    /// Kinesin-sim seeds 7770 and 19650: a sixteenth of a value below 16
    /// is 0, so a largest-recent event of 13 records never decayed and a
    /// busy EFO shard whose events now bring 1-3 records kept reserving 13
    /// of a 20-record budget.
    #[test]
    fn a_largest_recent_event_below_sixteen_records_decays() {
        let t0 = crate::test_epoch();
        let mut h = H::efo(StartPosition::TrimHorizon, t0);
        let big = chunk(
            (0..13)
                .map(|i| rec(&format!("49590000{:02}", 10 + i), 0, true))
                .collect(),
            None,
        );
        h.r.size.observe(&big);
        assert_eq!(h.r.size.records_per_read, 13);
        let one = chunk(vec![rec("4959000099", 0, true)], None);
        let mut seen = Vec::new();
        for _ in 0..13 {
            h.r.size.observe(&one);
            seen.push(h.r.size.records_per_read);
        }
        assert_eq!(seen, [12, 11, 10, 9, 8, 7, 6, 5, 4, 3, 2, 1, 1]);
    }

    #[test]
    fn a_kpl_read_is_sized_by_its_expanded_size_not_its_kinesis_record_count() {
        let t0 = crate::test_epoch();
        let room = |free: (u64, u64)| PoolRoom {
            free,
            max: (50_000, 1 << 20),
            share: (50_000, 1 << 20),
            fair: (50_000, 1 << 20),
        };
        let h = H::polling(StartPosition::TrimHorizon, t0);
        // Unobserved: a Kinesis record may be 1 MiB (6 MiB in flight,
        // clipped to the budget), so one fits the budget.
        assert_eq!(
            h.r.read_plan(room((50_000, 1 << 20))),
            Some(ReadPlan {
                limit: 1,
                records: 1,
                bytes: 1 << 20
            })
        );
        assert_eq!(h.r.read_plan(room((50_000, (1 << 20) - 1))), None);
        // One Kinesis record (a tiny aggregate on the wire) expanded into
        // 500 user records of 10 bytes: the next Limit counts 5,000 bytes
        // and 500 records per Kinesis record, charged in flight at
        // 5,000 * 6 + 500 * 256 = 158,000 bytes.
        let mut h = h;
        let recs: Vec<RecordMeta> = (0..500).map(|i| rec("4959000001", i, i == 499)).collect();
        let mut data = chunk(recs, None);
        data.kinesis_records = 1;
        h.r.size.observe(&data);
        assert_eq!(
            (h.r.size.records_per_record, h.r.size.bytes_per_record),
            (500, 5_000)
        );
        assert_eq!(
            h.r.read_plan(room((50_000, 1 << 20))),
            Some(ReadPlan {
                limit: 6,
                records: 3_000,
                bytes: 948_000
            }),
            "6 aggregates in flight fill the byte budget"
        );
        assert_eq!(
            h.r.read_plan(PoolRoom {
                free: (50_000, 64 << 20),
                max: (50_000, 64 << 20),
                share: (50_000, 64 << 20),
                fair: (50_000, 64 << 20),
            }),
            Some(ReadPlan {
                limit: 100,
                records: 50_000,
                bytes: 15_800_000
            }),
            "100 aggregates fill the record budget; max_records is 100 too"
        );
        assert_eq!(
            h.r.read_plan(room((2_000, 1 << 20))).map(|p| p.limit),
            Some(4),
            "the Limit follows the room left"
        );
        // A quiet spell lowers the estimate by a sixteenth per answer.
        let mut small = chunk(vec![rec("4959000002", 0, true)], None);
        small.kinesis_records = 1;
        h.r.size.observe(&small);
        assert_eq!(h.r.size.records_per_record, 469);
        // The largest record counts, not the average: one 1,000-byte
        // record among 10-byte ones sizes the next Limit.
        let mut h = H::polling(StartPosition::TrimHorizon, t0);
        let mut mixed = chunk(
            (0..10)
                .map(|i| rec(&format!("49590000{:02}", 10 + i), 0, true))
                .collect(),
            None,
        );
        mixed.records[3].bytes = 1000;
        h.r.size.observe(&mixed);
        assert_eq!(
            (h.r.size.bytes_per_record, h.r.size.bytes_per_read),
            (1000, 1090)
        );
        // 1,000 bytes are 6,256 in flight: 3 fit in 20,000.
        assert_eq!(
            h.r.read_plan(room((50_000, 20_000))).map(|p| p.limit),
            Some(3)
        );
    }
}

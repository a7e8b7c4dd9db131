//! The [`Worker`]: one per process; composes every machine of the core.
//!
//! Models: a Kinesis consumer process in a fleet. It holds leases
//! ([`crate::lease`]), reads the leased shards by EFO or polling
//! ([`crate::shard`], [`crate::registration`]), admits what arrives into the global
//! pending pool ([`crate::pool`]), cuts batches for the application, tracks
//! acks into checkpoints ([`crate::checkpoint`]) and writes them
//! conditionally on the lease's fencing token.
//!
//! AWS/SPEC rules encoded here: at-least-once delivery with ordered
//! checkpoints (SPEC 3); a reader takes the next event from the network only
//! with credit from the pool (SPEC 7); checkpoints every `commit_period`
//! when progressed, at hand-off, at shutdown, SHARD_END at a drained shard
//! end (SPEC 3, 5); graceful hand-off waits for in-flight acks (SPEC 4);
//! shutdown stops reading, waits for acks, writes final checkpoints and
//! releases leases (SPEC 9).
//!
//! Invariants (checked by [`Worker::check_invariants`], which the simulator
//! calls after every step): pool usage equals the sum of the permits the
//! worker holds (queued chunks plus delivered, unacked batches), and is 0
//! once no shard is read; every shard the worker reads is a lease it holds;
//! a batch is only delivered with the token of a lease held at that moment.
//!
//! # API kinds (as quinn-proto's `Connection`)
//!
//! - **getters** (`&self`): [`Worker::held_shards`], [`Worker::shard_status`],
//!   [`Worker::pool_used`], [`Worker::stats`], [`Worker::lease`].
//! - **inputs**: [`Worker::handle_input`] (answers to actions and stream
//!   events), [`Worker::handle_timeout`] (a spurious call is a no-op).
//! - **application commands**: [`Worker::ack`], [`Worker::nack`],
//!   [`Worker::shutdown`].
//! - **outputs**: [`Worker::poll_action`] (I/O to perform),
//!   [`Worker::poll_event`] (for the application),
//!   [`Worker::poll_timeout`] (when to call `handle_timeout`, and why).
//!
//! Cost: an input or timeout visits only the shards it touched (and the
//! ones whose deadline it reached, and, when pool room appears, the ones
//! waiting for credit), in key order: the same outputs, in the same order,
//! as a walk of every shard, without the walk (`Worker::pump`).
//!
//! Drain order: after every input or command, drain `poll_action` until
//! `None` and `poll_event` until `None` (either order; neither depends on
//! the other being drained first), then wait for the next input or for
//! `poll_timeout`.

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::time::{Duration, Instant};

use crate::checkpoint::{CheckpointTracker, Slot};
use crate::config::{Config, ConfigError, Retrieval, StartFrom};
use crate::ids::{BatchId, ChunkId, FencingToken, IdMint, OpId, Owner, ShardRef, StreamId, SubId};
use crate::io::{Action, BatchMeta, Chunk, Event, Input, LostReason, RecordMeta};
use crate::kpl::HashRange;
use crate::lease::{LeaseEvent, LeaseManager, LeaseView};
use crate::pool::{Permit, Pool};
use crate::registration::Registration;
use crate::rng::Rng;
use crate::sequence::{Checkpoint, StartPosition};
use crate::shard::{ReaderEvent, ReaderMode, ShardReader};
use crate::timer::{Timer, TimerTable};

/// How long a shard that failed fatally is not taken again by this worker.
const QUARANTINE: Duration = Duration::from_secs(300);

/// Why an ack or nack was not applied. Never fatal: the batch's records are
/// safe either way (redelivered by whoever reads the shard next).
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum AckError {
    /// Unknown id, already acked, or its lease was lost meanwhile.
    #[error("{0}: unknown batch (already acked or nacked, or its lease was lost; its records are redelivered by the shard's next reader)")]
    UnknownBatch(BatchId),
}

/// Counters for monitoring and for the simulator's summary.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct WorkerStats {
    /// Batches delivered (redeliveries included).
    pub batches_delivered: u64,
    /// User records delivered (redeliveries included).
    pub records_delivered: u64,
    /// Batches redelivered after a nack.
    pub redeliveries: u64,
    /// Acks applied.
    pub acks: u64,
    /// Chunks that arrived and waited for pool room.
    pub chunks_parked: u64,
}

/// What the worker knows about one shard it reads (a getter's view).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ShardStatus {
    /// Fencing token of the lease.
    pub token: FencingToken,
    /// End of the contiguously acknowledged prefix.
    pub watermark: Option<Checkpoint>,
    /// Last checkpoint written.
    pub durable: Option<Checkpoint>,
    /// Delivered, not yet acknowledged records.
    pub pending_records: u32,
    /// Admitted records not yet delivered.
    pub queued_records: u64,
    /// Where the reader would resume.
    pub resume: Option<StartPosition>,
    /// MillisBehindLatest of the last chunk.
    pub millis_behind: u64,
}

/// An admitted chunk whose records are not all delivered yet.
struct Queued {
    chunk: ChunkId,
    records: Vec<RecordMeta>,
    next: u32,
    permit: Permit,
    millis_behind: u64,
}

/// A chunk that arrived while the pool had no room for it.
struct Parked {
    chunk: ChunkId,
    data: Chunk,
}

/// A delivered batch awaiting ack.
struct Inflight {
    slot: Slot,
    permit: Permit,
    batch: BatchMeta,
    /// Nacked and not yet redelivered.
    nacked: bool,
}

#[derive(Clone, Debug, PartialEq, Eq)]
enum Phase {
    /// Reading and delivering.
    Reading,
    /// A taker asked: not reading, waiting for in-flight acks, then transfer.
    HandingOff { deadline: Instant },
    /// Shutdown: waiting for in-flight acks, then release.
    Closing,
    /// Transfer / release / SHARD_END write sent; waiting for the lease
    /// manager to report the lease lost.
    Leaving,
}

struct ShardState {
    token: FencingToken,
    reader: Option<ShardReader>,
    tracker: CheckpointTracker,
    queue: VecDeque<Queued>,
    parked: Option<Parked>,
    /// Batches delivered and neither acked nor nacked-while-leaving.
    inflight: BTreeSet<BatchId>,
    /// Nacked batches to deliver again, oldest first.
    redeliver: VecDeque<BatchId>,
    phase: Phase,
    /// The reader saw the end of the shard (all chunks received).
    end_seen: bool,
    /// SHARD_END requested from the lease manager.
    finishing: bool,
    millis_behind: u64,
    /// When the oldest undelivered record became deliverable (period batching).
    open_since: Option<Instant>,
    /// Cached at the last visit (see [`Worker::settle`]): the shard's next
    /// deadline and why, as indexed in `Worker::deadlines`.
    deadline: Option<(Instant, &'static str)>,
    /// Cached at the last visit: the reader holds credit (an outstanding
    /// Pull or GetRecords), counted in `Worker::credit_outstanding`.
    holds_credit: bool,
    /// Listed in `Worker::dirty`.
    touched: bool,
    /// Listed in `Worker::wanting` (the reader wanted credit at the last
    /// visit).
    listed: bool,
}

impl ShardState {
    /// The earliest instant at which something of this shard becomes due
    /// without an input (reader wake-up, hand-off deadline, batch period),
    /// and why. Ties keep the first in that order.
    fn next_deadline(&self, period: Option<Duration>) -> Option<(Instant, &'static str)> {
        let mut best = self.reader.as_ref().and_then(|r| r.poll_timeout());
        let mut consider = |c: (Instant, &'static str)| {
            if best.is_none_or(|(b, _)| c.0 < b) {
                best = Some(c);
            }
        };
        if let Phase::HandingOff { deadline } = self.phase {
            consider((deadline, "hand-off deadline"));
        }
        if let (Some(since), Some(period)) = (self.open_since, period) {
            consider((since + period, "batch period"));
        }
        best
    }

    /// Whether the credit round may grant this shard's reader one unit now.
    fn wants_credit(&self, now: Instant) -> bool {
        self.parked.is_none()
            && self.phase == Phase::Reading
            && self.reader.as_ref().is_some_and(|r| r.wants_credit(now))
    }

    fn queued_records(&self) -> u64 {
        self.queue
            .iter()
            .map(|q| (q.records.len() as u64).saturating_sub(u64::from(q.next)))
            .sum()
    }
}

/// Where a shard's state lives in the [`ShardTable`]; stable while the
/// shard is read.
type StateSlot = usize;

/// The shards a worker reads: each state stays in one slot while the shard
/// is read, so the pump's indexes (`dirty`, `wanting`, `deadlines`) reach it
/// without a search; `index` keeps lookups by shard and key order.
#[derive(Default)]
struct ShardTable {
    index: BTreeMap<ShardRef, StateSlot>,
    /// The slots in key order (walks need no tree: shards come and go
    /// rarely, walks happen after every step).
    ordered: Vec<StateSlot>,
    slots: Vec<Option<(ShardRef, ShardState)>>,
    free: Vec<StateSlot>,
}

impl ShardTable {
    fn slot_of(&self, shard: &ShardRef) -> Option<StateSlot> {
        self.index.get(shard).copied()
    }

    fn get(&self, shard: &ShardRef) -> Option<&ShardState> {
        self.at(self.slot_of(shard)?).map(|(_, st)| st)
    }

    fn get_mut(&mut self, shard: &ShardRef) -> Option<&mut ShardState> {
        let slot = self.slot_of(shard)?;
        self.at_mut(slot).map(|(_, st)| st)
    }

    fn contains_key(&self, shard: &ShardRef) -> bool {
        self.index.contains_key(shard)
    }

    fn at(&self, slot: StateSlot) -> Option<(&ShardRef, &ShardState)> {
        self.slots.get(slot)?.as_ref().map(|(k, st)| (k, st))
    }

    fn at_mut(&mut self, slot: StateSlot) -> Option<(&ShardRef, &mut ShardState)> {
        self.slots.get_mut(slot)?.as_mut().map(|(k, st)| (&*k, st))
    }

    /// Add a shard not read yet (the caller checked); its slot.
    fn insert(&mut self, shard: ShardRef, st: ShardState) -> StateSlot {
        let slot = match self.free.pop() {
            Some(slot) => {
                self.slots[slot] = Some((shard.clone(), st));
                slot
            }
            None => {
                self.slots.push(Some((shard.clone(), st)));
                self.slots.len() - 1
            }
        };
        let at = self
            .ordered
            .partition_point(|&s| self.slots[s].as_ref().is_some_and(|(k, _)| *k < shard));
        self.ordered.insert(at, slot);
        self.index.insert(shard, slot);
        slot
    }

    fn remove(&mut self, shard: &ShardRef) -> Option<ShardState> {
        let slot = self.index.remove(shard)?;
        self.ordered.retain(|&s| s != slot);
        let (_, st) = self.slots.get_mut(slot)?.take()?;
        self.free.push(slot);
        Some(st)
    }

    /// In key order.
    fn iter(&self) -> impl Iterator<Item = (&ShardRef, &ShardState)> {
        self.ordered.iter().filter_map(|&slot| self.at(slot))
    }

    fn keys(&self) -> impl Iterator<Item = &ShardRef> {
        self.index.keys()
    }

    fn len(&self) -> usize {
        self.index.len()
    }

    fn is_empty(&self) -> bool {
        self.index.is_empty()
    }
}

/// One consumer process: see the module documentation for the API kinds and
/// the run loop.
pub struct Worker {
    config: Config,
    start: Instant,
    start_unix_ms: u64,
    now: Instant,
    mint: IdMint,
    rng: Rng,
    lease: LeaseManager,
    registrations: BTreeMap<StreamId, Registration>,
    shards: ShardTable,
    pool: Pool<ShardRef>,
    batches: BTreeMap<BatchId, (ShardRef, Inflight)>,
    /// ListShards in flight.
    list_ops: BTreeMap<OpId, StreamId>,
    /// Reader ops and subs in flight, to route inputs and free stale chunks.
    reader_ops: BTreeMap<OpId, (ShardRef, Option<ChunkId>)>,
    reader_subs: BTreeMap<SubId, ShardRef>,
    /// Shards ListShards reported closed.
    closed: BTreeSet<ShardRef>,
    /// Hash ranges of the shards ListShards and ChildShards reported (each
    /// reader carries its shard's in every read, for KPL filtering). A
    /// ListShards answer replaces its stream's ranges, so shards gone from
    /// the stream are forgotten.
    ranges: BTreeMap<ShardRef, HashRange>,
    /// SubscribeToShard spacing of stopped readers, for the next reader of
    /// the same shard (AWS: 1 s between calls, 5 s after ResourceInUse).
    spacing: BTreeMap<ShardRef, (Option<Instant>, Option<Instant>)>,
    timers: TimerTable,
    actions: VecDeque<Action>,
    events: VecDeque<Event>,
    shutting_down: bool,
    done: bool,
    credit_cursor: Option<ShardRef>,
    /// Shards touched since the last [`Worker::settle`]: inputs routed to
    /// them, commands, lease events, deadlines reached. `pump` visits only
    /// these (in key order, so outputs are in the same order as a walk of
    /// every shard), plus `wanting` in the credit round.
    /// Unordered; each pass sorts its copy by shard.
    dirty: Vec<StateSlot>,
    /// Shards whose reader wanted credit at their last visit: the credit
    /// round serves them when pool room appears, touched or not. Unordered.
    wanting: Vec<StateSlot>,
    /// Readers holding credit (sum of `ShardState::holds_credit`).
    credit_outstanding: u64,
    /// Every shard's cached `ShardState::deadline`, ordered by instant (then
    /// by shard, as a walk of every shard breaks ties).
    deadlines: BTreeSet<(Instant, ShardRef, StateSlot)>,
    /// EFO readers started before their stream's consumer ARN was known.
    awaiting_arn: BTreeSet<ShardRef>,
    /// Bumped whenever `dirty` loses entries (between bumps it only
    /// grows), so `(dirty_epoch, dirty.len())` names its contents.
    dirty_epoch: u64,
    /// `dirty` sorted by shard, for the passes of `pump`, and the
    /// `(dirty_epoch, len)` it was sorted at: passes reuse it while no
    /// other shard was touched.
    sorted: Vec<StateSlot>,
    sorted_at: (u64, usize),
    /// Scratch list for the credit round (kept to reuse its allocation).
    scratch: Vec<StateSlot>,
    /// Running estimate of a non-empty chunk's size (records, bytes): each
    /// outstanding read reserves this much of the pool, so reads in flight
    /// plus what is admitted stay within the budget whatever the shard count.
    chunk_estimate: (u64, u64),
    stats: WorkerStats,
}

impl Worker {
    /// A worker at `now` (monotonic) and `unix_ms` (the wall clock at the
    /// same moment, used only for AT_TIMESTAMP anchoring and lease rows).
    /// Invalid configuration is an error naming the field.
    pub fn new(config: Config, now: Instant, unix_ms: u64) -> Result<Worker, ConfigError> {
        config.validate()?;
        let mut rng = Rng::new(config.seed);
        let lease = LeaseManager::new(&config, now, unix_ms);
        let mut registrations = BTreeMap::new();
        if let Retrieval::Efo { consumer } = &config.retrieval {
            for stream in &config.streams {
                let seed = rng.next_u64();
                registrations.insert(
                    stream.clone(),
                    Registration::new(stream.clone(), consumer.clone(), &config, seed, now),
                );
            }
        }
        let pool = Pool::new(config.pool_records, config.pool_bytes);
        let mut timers = TimerTable::default();
        timers.set(Timer::Commit, now + config.commit_period);
        timers.set(Timer::ShardSync, now);
        let mut worker = Worker {
            config,
            start: now,
            start_unix_ms: unix_ms,
            now,
            mint: IdMint::default(),
            rng,
            lease,
            registrations,
            shards: ShardTable::default(),
            pool,
            batches: BTreeMap::new(),
            list_ops: BTreeMap::new(),
            reader_ops: BTreeMap::new(),
            reader_subs: BTreeMap::new(),
            closed: BTreeSet::new(),
            ranges: BTreeMap::new(),
            spacing: BTreeMap::new(),
            timers,
            actions: VecDeque::new(),
            events: VecDeque::new(),
            shutting_down: false,
            done: false,
            credit_cursor: None,
            dirty: Vec::new(),
            wanting: Vec::new(),
            credit_outstanding: 0,
            deadlines: BTreeSet::new(),
            awaiting_arn: BTreeSet::new(),
            dirty_epoch: 1,
            sorted: Vec::new(),
            sorted_at: (0, 0),
            scratch: Vec::new(),
            chunk_estimate: (1, 1024),
            stats: WorkerStats::default(),
        };
        worker.handle_timeout(now);
        Ok(worker)
    }

    // ----- getters -------------------------------------------------------

    /// The configuration in force.
    pub fn config(&self) -> &Config {
        &self.config
    }

    /// This process as a lease owner.
    pub fn owner(&self) -> &Owner {
        &self.config.owner
    }

    /// What this worker knows of the lease table and the fleet (table
    /// view, liveness, counters), read-only.
    pub fn leases(&self) -> LeaseView<'_> {
        self.lease.view()
    }

    /// Shards this worker reads, with their fencing tokens.
    pub fn held_shards(&self) -> Vec<(ShardRef, FencingToken)> {
        self.shards
            .iter()
            .map(|(s, st)| (s.clone(), st.token))
            .collect()
    }

    /// Status of one shard this worker reads.
    pub fn shard_status(&self, shard: &ShardRef) -> Option<ShardStatus> {
        let st = self.shards.get(shard)?;
        Some(ShardStatus {
            token: st.token,
            watermark: st.tracker.watermark().cloned(),
            durable: st.tracker.durable().cloned(),
            pending_records: st.tracker.pending_records(),
            queued_records: st.queued_records(),
            resume: st
                .reader
                .as_ref()
                .and_then(|r| r.resume_position().cloned()),
            millis_behind: st.millis_behind,
        })
    }

    /// Pool usage: (records, bytes).
    pub fn pool_used(&self) -> (u64, u64) {
        (self.pool.used_records(), self.pool.used_bytes())
    }

    /// Counters.
    pub fn stats(&self) -> &WorkerStats {
        &self.stats
    }

    /// True once [`Event::ShutdownComplete`] was emitted.
    pub fn is_done(&self) -> bool {
        self.done
    }

    /// The wall clock (unix ms) at `now`, derived from the one given at
    /// construction and the monotonic clock.
    pub fn unix_ms(&self, now: Instant) -> u64 {
        let elapsed = now.saturating_duration_since(self.start).as_millis();
        self.start_unix_ms
            .saturating_add(u64::try_from(elapsed).unwrap_or(u64::MAX))
    }

    /// Check the worker's invariants; the simulator calls this after every
    /// step. `Err` names the broken one.
    pub fn check_invariants(&self) -> Result<(), String> {
        let mut records = 0u64;
        let mut bytes = 0u64;
        let mut inflight = 0usize;
        // Both maps are ordered by shard: walk them side by side.
        let mut held = self.lease.held();
        let mut next_held = held.next();
        for (shard, st) in self.shards.iter() {
            for q in &st.queue {
                records += q.permit.records();
                bytes += q.permit.bytes();
            }
            for id in &st.inflight {
                match self.batches.get(id) {
                    Some((s, _)) if s == shard => inflight += 1,
                    _ => return Err(format!("{id:?} of {shard:?} is not in flight for it")),
                }
            }
            while next_held.is_some_and(|(h, _)| h < shard) {
                next_held = held.next();
            }
            let token = next_held.filter(|(h, _)| *h == shard).map(|(_, t)| t);
            if st.phase != Phase::Leaving && !st.finishing && token != Some(st.token) {
                return Err(format!(
                    "{shard:?} is read with token {:?} but the lease manager holds {token:?}",
                    st.token,
                ));
            }
        }
        // Every batch in flight belongs to a shard read (each shard listed
        // its own above).
        if inflight != self.batches.len() {
            return Err(format!(
                "{} batches in flight, {inflight} of them for shards read",
                self.batches.len()
            ));
        }
        for (_, inf) in self.batches.values() {
            records += inf.permit.records();
            bytes += inf.permit.bytes();
        }
        if (records, bytes) != self.pool_used() {
            return Err(format!(
                "pool used {:?} != sum of live permits ({records}, {bytes})",
                self.pool_used()
            ));
        }
        if self.shards.is_empty() && (self.pool.used_records() != 0 || self.pool.used_bytes() != 0)
        {
            return Err("pool not empty with no shard read".into());
        }
        if cfg!(debug_assertions) {
            self.check_indexes()?;
        }
        self.lease.check_invariants()
    }

    /// The incremental indexes `pump` relies on agree with a walk of every
    /// shard (debug builds: the simulator's tests run this after every
    /// step).
    fn check_indexes(&self) -> Result<(), String> {
        if !self.dirty.is_empty() || self.done {
            return Ok(());
        }
        let period = self.config.batching.period;
        let mut holding = 0u64;
        let mut indexed = 0usize;
        for (shard, &slot) in &self.shards.index {
            let Some((key, st)) = self.shards.at(slot) else {
                return Err(format!("{shard:?}: empty slot {slot}"));
            };
            if key != shard {
                return Err(format!("{shard:?}: slot {slot} holds {key:?}"));
            }
            let holds = st.reader.as_ref().is_some_and(|r| r.holds_credit());
            if holds != st.holds_credit {
                return Err(format!(
                    "{shard:?}: cached holds_credit {} != {holds}",
                    st.holds_credit
                ));
            }
            holding += u64::from(holds);
            let next = st.next_deadline(period);
            if next != st.deadline {
                return Err(format!(
                    "{shard:?}: cached deadline {:?} != {next:?}",
                    st.deadline
                ));
            }
            if let Some((at, _)) = next {
                indexed += 1;
                if !self.deadlines.contains(&(at, shard.clone(), slot)) {
                    return Err(format!("{shard:?}: deadline {at:?} not indexed"));
                }
            }
            let listed = self.wanting.iter().filter(|&&s| s == slot).count();
            if st.wants_credit(self.now) != st.listed || listed != usize::from(st.listed) {
                return Err(format!(
                    "{shard:?}: wants credit but not listed, or the reverse"
                ));
            }
            if st.touched {
                return Err(format!("{shard:?}: still marked touched"));
            }
        }
        if holding != self.credit_outstanding {
            return Err(format!(
                "{holding} readers hold credit, {} counted",
                self.credit_outstanding
            ));
        }
        if indexed != self.deadlines.len() {
            return Err(format!(
                "{} deadlines indexed for {indexed} shards with one",
                self.deadlines.len()
            ));
        }
        if self.wanting.iter().any(|&s| self.shards.at(s).is_none()) {
            return Err("a shard not read is listed as wanting credit".into());
        }
        let ordered: Vec<StateSlot> = self.shards.index.values().copied().collect();
        if ordered != self.shards.ordered {
            return Err("shard slots out of key order".into());
        }
        let used = self.shards.slots.iter().filter(|s| s.is_some()).count();
        if used != self.shards.len() || used + self.shards.free.len() != self.shards.slots.len() {
            return Err("shard slots and index disagree".into());
        }
        Ok(())
    }

    // ----- inputs --------------------------------------------------------

    /// Feed an answer or a stream event. Inputs with ids the worker does not
    /// know (stale, duplicated) are ignored; their chunks are freed with
    /// [`Event::ChunkDone`].
    pub fn handle_input(&mut self, now: Instant, input: Input) {
        self.set_now(now);
        if self.done {
            self.free_stale_chunk(&input);
            return;
        }
        match &input {
            Input::Shards { op, result } => {
                if let Some(stream) = self.list_ops.remove(op) {
                    match result {
                        Ok(list) => {
                            self.ranges.retain(|r, _| r.stream != stream);
                            for info in list {
                                let r = ShardRef::new(stream.clone(), info.shard.clone());
                                if let Some(reader) =
                                    self.shards.get_mut(&r).and_then(|s| s.reader.as_mut())
                                {
                                    reader.set_range(info.hash_range);
                                }
                                self.ranges.insert(r.clone(), info.hash_range);
                                if info.ending_seq.is_some() {
                                    if let Some(reader) =
                                        self.shards.get_mut(&r).and_then(|s| s.reader.as_mut())
                                    {
                                        reader.mark_closed();
                                        self.touch(&r);
                                    }
                                    self.closed.insert(r);
                                }
                            }
                            if !self.shutting_down {
                                self.lease
                                    .handle_shards(now, &stream, list, &mut self.mint);
                            }
                        }
                        Err(class) => self.events.push_back(Event::Warning {
                            shard: None,
                            message: format!(
                                "ListShards on {stream} failed ({class:?}); retrying at the next shard sync"
                            ),
                        }),
                    }
                }
            }
            Input::Consumer { .. } => {
                for reg in self.registrations.values_mut() {
                    if reg.handle_input(now, &input) {
                        break;
                    }
                }
            }
            Input::SubscriptionEvent { sub, .. }
            | Input::SubscriptionEnded { sub }
            | Input::SubscriptionError { sub, .. } => {
                let consumed = match self.reader_subs.get(sub) {
                    Some(shard) => {
                        Self::route_input(&mut self.shards, &mut self.dirty, now, shard, &input)
                    }
                    None => false,
                };
                if !consumed {
                    self.free_stale_chunk(&input);
                }
            }
            Input::Iterator { op, .. } | Input::Records { op, .. } => {
                let routed = self.reader_ops.remove(op);
                let consumed = match &routed {
                    Some((shard, _)) => {
                        Self::route_input(&mut self.shards, &mut self.dirty, now, shard, &input)
                    }
                    None => false,
                };
                if !consumed {
                    if let Some((_, Some(chunk))) = routed {
                        self.events.push_back(Event::ChunkDone { chunk });
                    }
                }
            }
            Input::Leases { .. }
            | Input::LeaseWritten { .. }
            | Input::Heartbeats { .. }
            | Input::HeartbeatWritten { .. } => {
                self.lease.handle_input(now, &input, &mut self.mint);
            }
        }
        self.pump(now);
    }

    /// Fire every timer due at `now`. A spurious call is a no-op.
    pub fn handle_timeout(&mut self, now: Instant) {
        self.set_now(now);
        if self.done {
            return;
        }
        for timer in self.timers.expire(now).collect::<Vec<_>>() {
            match timer {
                Timer::Commit => {
                    self.commit(now);
                    self.timers
                        .set(Timer::Commit, now + self.config.commit_period);
                }
                Timer::ShardSync => {
                    if !self.shutting_down {
                        for stream in self.config.streams.clone() {
                            let op = self.mint.op();
                            self.list_ops.insert(op, stream.clone());
                            self.actions.push_back(Action::ListShards { op, stream });
                        }
                        self.timers
                            .set(Timer::ShardSync, now + self.config.shard_sync_period);
                    }
                }
                Timer::ShutdownDeadline => {
                    // Stop waiting for acks: release everything now.
                    let shards: Vec<ShardRef> = self.shards.keys().cloned().collect();
                    for shard in shards {
                        self.leave(now, &shard);
                    }
                }
            }
        }
        // The lease manager's deadlines were fired by `set_now`; every lease
        // call made since fires what it makes due itself.
        for reg in self.registrations.values_mut() {
            reg.handle_timeout(now);
        }
        // Only readers whose deadline is reached can have anything to fire
        // (`handle_timeout` is a no-op for the others).
        for (at, _, slot) in &self.deadlines {
            if *at > now {
                break;
            }
            if let Some(r) = self
                .shards
                .at_mut(*slot)
                .and_then(|(_, s)| s.reader.as_mut())
            {
                r.handle_timeout(now);
            }
        }
        self.pump(now);
    }

    // ----- application commands ------------------------------------------

    /// The application processed a batch: its records may be checkpointed.
    pub fn ack(&mut self, now: Instant, batch: BatchId) -> Result<(), AckError> {
        self.set_now(now);
        let (shard, inf) = self
            .batches
            .remove(&batch)
            .ok_or(AckError::UnknownBatch(batch))?;
        let st = self
            .shards
            .get_mut(&shard)
            .ok_or(AckError::UnknownBatch(batch))?;
        st.inflight.remove(&batch);
        st.redeliver.retain(|b| *b != batch);
        let _ = st.tracker.ack(inf.slot);
        self.pool.release(inf.permit);
        self.touch(&shard);
        self.stats.acks += 1;
        self.pump(now);
        Ok(())
    }

    /// The application could not process a batch: it is delivered again
    /// (while the lease is held and the shard is being read), and the
    /// checkpoint stays before it.
    pub fn nack(&mut self, now: Instant, batch: BatchId) -> Result<(), AckError> {
        self.set_now(now);
        let (shard, inf) = self
            .batches
            .get_mut(&batch)
            .ok_or(AckError::UnknownBatch(batch))?;
        if inf.nacked {
            return Err(AckError::UnknownBatch(batch));
        }
        let st = self
            .shards
            .get_mut(shard)
            .ok_or(AckError::UnknownBatch(batch))?;
        let _ = st.tracker.nack(inf.slot);
        if let Some(slot) = self.shards.slot_of(shard) {
            if let Some((_, st)) = self.shards.at_mut(slot) {
                Self::mark_touched(&mut self.dirty, slot, st);
            }
        }
        let Some(st) = self.shards.get_mut(shard) else {
            return Err(AckError::UnknownBatch(batch));
        };
        if st.phase == Phase::Reading {
            inf.nacked = true;
            st.redeliver.push_back(batch);
        } else {
            // Leaving: nobody will redeliver it here; the next reader reads
            // it again from the checkpoint, which stays before it.
            st.inflight.remove(&batch);
            let (_, inf) = self.batches.remove(&batch).expect("present above");
            self.pool.release(inf.permit);
        }
        self.pump(now);
        Ok(())
    }

    /// Stop: read nothing new, deliver nothing new, wait for in-flight acks
    /// up to `shutdown_timeout`, write final checkpoints, release the leases,
    /// then emit [`Event::ShutdownComplete`]. Never deregisters an EFO
    /// consumer.
    pub fn shutdown(&mut self, now: Instant) {
        self.set_now(now);
        if self.shutting_down || self.done {
            return;
        }
        self.shutting_down = true;
        self.timers.stop(Timer::ShardSync);
        self.timers
            .set(Timer::ShutdownDeadline, now + self.config.shutdown_timeout);
        for reg in self.registrations.values_mut() {
            reg.cancel();
        }
        self.lease.shutdown(now, &mut self.mint);
        let shards: Vec<ShardRef> = self.shards.keys().cloned().collect();
        for shard in shards {
            self.stop_reading(&shard);
            if let Some(st) = self.shards.get_mut(&shard) {
                if st.phase == Phase::Reading || matches!(st.phase, Phase::HandingOff { .. }) {
                    st.phase = Phase::Closing;
                }
            }
        }
        self.pump(now);
    }

    // ----- outputs -------------------------------------------------------

    /// Next I/O to perform.
    #[must_use]
    pub fn poll_action(&mut self) -> Option<Action> {
        self.actions.pop_front()
    }

    /// Next notification for the application.
    #[must_use]
    pub fn poll_event(&mut self) -> Option<Event> {
        self.events.pop_front()
    }

    /// When to call [`Worker::handle_timeout`], and why.
    #[must_use]
    pub fn poll_timeout(&self) -> Option<(Instant, &'static str)> {
        if self.done {
            return None;
        }
        let mut best = self.timers.next();
        let mut consider = |c: Option<(Instant, &'static str)>| {
            if let Some((at, why)) = c {
                if best.is_none_or(|(b, _)| at < b) {
                    best = Some((at, why));
                }
            }
        };
        consider(self.lease.poll_timeout());
        for reg in self.registrations.values() {
            consider(reg.poll_timeout());
        }
        // The earliest shard deadline (ties: the first shard in key order).
        if let Some((_, _, slot)) = self.deadlines.first() {
            consider(self.shards.at(*slot).and_then(|(_, st)| st.deadline));
        }
        best
    }

    // ----- internals -----------------------------------------------------

    fn set_now(&mut self, now: Instant) {
        // Time must not go backwards; tolerate it by keeping the latest.
        if now > self.now {
            self.now = now;
        }
        // Self-fence before anything else: an input that reaches a process
        // resuming from a stall past its fence deadline must not be
        // delivered before the timer fires (kinesin-sim seed 2: a zombie
        // delivered with a taken-over token). Leases lost here stop their
        // readers before the input is routed, so its chunk is stale and
        // freed.
        if !self.done {
            self.lease.handle_timeout(now, &mut self.mint);
            self.drain_lease_events(now);
        }
    }

    /// Free the payload of an input nobody will use.
    fn free_stale_chunk(&mut self, input: &Input) {
        match input {
            Input::SubscriptionEvent { chunk, .. } => {
                self.events.push_back(Event::ChunkDone { chunk: *chunk })
            }
            Input::Records { op, .. } => {
                if let Some((_, Some(chunk))) = self.reader_ops.remove(op) {
                    self.events.push_back(Event::ChunkDone { chunk });
                }
            }
            _ => {}
        }
    }

    /// Run every machine until nothing changes. Shards are visited only
    /// when touched since the last pump or when a deadline of theirs is
    /// reached (plus the credit round over `wanting`): a shard nobody
    /// touched has nothing to do, so this is the same as walking them all.
    fn pump(&mut self, now: Instant) {
        for (at, _, slot) in &self.deadlines {
            if *at > now {
                break;
            }
            if let Some((_, st)) = self.shards.at_mut(*slot) {
                Self::mark_touched(&mut self.dirty, *slot, st);
            }
        }
        let mut settled = true;
        for _ in 0..64 {
            let mut progress = false;
            progress |= self.drain_lease_events(now);
            progress |= self.drain_registrations(now);
            progress |= self.drain_readers(now);
            progress |= self.admit_parked(now);
            progress |= self.grant_credit(now);
            progress |= self.deliver(now);
            progress |= self.advance_phases(now);
            while let Some(a) = self.lease.poll_action() {
                self.actions.push_back(a);
            }
            settled = !progress;
            if settled {
                break;
            }
        }
        self.settle(now, settled);
        self.maybe_complete_shutdown();
    }

    /// Mark a shard touched: the next passes of `pump` visit it.
    fn touch(&mut self, shard: &ShardRef) {
        if let Some(slot) = self.shards.slot_of(shard) {
            self.touch_slot(slot);
        }
    }

    fn touch_slot(&mut self, slot: StateSlot) {
        if let Some((_, st)) = self.shards.at_mut(slot) {
            Self::mark_touched(&mut self.dirty, slot, st);
        }
    }

    /// [`Self::touch`] for a caller holding the shard's state.
    fn mark_touched(dirty: &mut Vec<StateSlot>, slot: StateSlot, st: &mut ShardState) {
        if !st.touched {
            st.touched = true;
            dirty.push(slot);
        }
    }

    /// Route a reader input to its shard; touched when the reader took it.
    fn route_input(
        shards: &mut ShardTable,
        dirty: &mut Vec<StateSlot>,
        now: Instant,
        shard: &ShardRef,
        input: &Input,
    ) -> bool {
        let Some(slot) = shards.slot_of(shard) else {
            return false;
        };
        let Some((_, st)) = shards.at_mut(slot) else {
            return false;
        };
        let consumed = st
            .reader
            .as_mut()
            .is_some_and(|r| r.handle_input(now, input));
        if consumed {
            Self::mark_touched(dirty, slot, st);
        }
        consumed
    }

    /// `slots` sorted by their shards (key order: the order a walk of every
    /// shard visits them).
    fn sort_by_shard(shards: &ShardTable, slots: &mut [StateSlot]) {
        if slots.len() > 1 {
            slots.sort_unstable_by(|a, b| {
                let key = |s: &StateSlot| shards.at(*s).map(|(k, _)| k);
                key(a).cmp(&key(b))
            });
        }
    }

    /// The slots of the touched shards, in key order (give the list back
    /// with `self.sorted = list`). Within one pass of `pump` a visit only
    /// touches the shard visited, so the list taken at the start of a pass
    /// is what the pass must visit.
    fn dirty_slots(&mut self) -> Vec<StateSlot> {
        let mut slots = std::mem::take(&mut self.sorted);
        let at = (self.dirty_epoch, self.dirty.len());
        if self.sorted_at != at {
            slots.clear();
            slots.extend_from_slice(&self.dirty);
            Self::sort_by_shard(&self.shards, &mut slots);
            self.sorted_at = at;
        }
        slots
    }

    /// Refresh the cached credit state of a touched shard: whether its
    /// reader holds credit (`credit_outstanding`) and wants some
    /// (`wanting`).
    fn recount_credit(
        outstanding: &mut u64,
        wanting: &mut Vec<StateSlot>,
        now: Instant,
        slot: StateSlot,
        st: &mut ShardState,
    ) {
        let holds = st.reader.as_ref().is_some_and(|r| r.holds_credit());
        if holds != st.holds_credit {
            st.holds_credit = holds;
            if holds {
                *outstanding += 1;
            } else {
                *outstanding -= 1;
            }
        }
        let wants = st.wants_credit(now);
        if wants != st.listed {
            st.listed = wants;
            if wants {
                wanting.push(slot);
            } else {
                wanting.retain(|&s| s != slot);
            }
        }
    }

    /// After a pump: re-index the deadlines and credit state of every
    /// touched shard, then forget the touches (kept when the pump stopped
    /// at its iteration bound with work left, so the next one resumes).
    fn settle(&mut self, now: Instant, settled: bool) {
        let period = self.config.batching.period;
        for &slot in &self.dirty {
            let Some((shard, st)) = self.shards.at_mut(slot) else {
                continue;
            };
            Self::recount_credit(
                &mut self.credit_outstanding,
                &mut self.wanting,
                now,
                slot,
                st,
            );
            let next = st.next_deadline(period);
            if next != st.deadline {
                if let Some((at, _)) = st.deadline {
                    self.deadlines.remove(&(at, shard.clone(), slot));
                }
                if let Some((at, _)) = next {
                    self.deadlines.insert((at, shard.clone(), slot));
                }
                st.deadline = next;
            }
            if settled {
                st.touched = false;
            }
        }
        if settled {
            self.dirty.clear();
            self.dirty_epoch += 1;
        }
    }

    /// A shard is no longer read: drop it from every index.
    fn forget(&mut self, shard: &ShardRef, slot: StateSlot, st: &ShardState) {
        if let Some((at, _)) = st.deadline {
            self.deadlines.remove(&(at, shard.clone(), slot));
        }
        if st.holds_credit {
            self.credit_outstanding -= 1;
        }
        if st.listed {
            self.wanting.retain(|&s| s != slot);
        }
        self.awaiting_arn.remove(shard);
        if st.touched {
            self.dirty.retain(|&s| s != slot);
            self.dirty_epoch += 1;
        }
    }

    fn drain_lease_events(&mut self, now: Instant) -> bool {
        let mut progress = false;
        while let Some(ev) = self.lease.poll_event() {
            progress = true;
            match ev {
                LeaseEvent::Acquired {
                    shard,
                    token,
                    checkpoint,
                    created_ms,
                } => self.start_reading(now, shard, token, checkpoint, created_ms),
                LeaseEvent::Lost {
                    shard,
                    token,
                    reason,
                } => self.lost(&shard, token, reason),
                LeaseEvent::HandoffRequested { shard, .. } => {
                    let deadline = now + self.config.handoff_timeout;
                    let reading = self
                        .shards
                        .get(&shard)
                        .is_some_and(|s| s.phase == Phase::Reading && !s.finishing);
                    if reading {
                        self.stop_reading(&shard);
                        if let Some(st) = self.shards.get_mut(&shard) {
                            st.phase = Phase::HandingOff { deadline };
                        }
                    }
                }
                LeaseEvent::CheckpointWritten { shard, checkpoint } => {
                    if let Some(st) = self.shards.get_mut(&shard) {
                        st.tracker.written(&checkpoint);
                        self.touch(&shard);
                    }
                }
            }
        }
        progress
    }

    fn start_reading(
        &mut self,
        now: Instant,
        shard: ShardRef,
        token: FencingToken,
        checkpoint: Option<Checkpoint>,
        created_ms: u64,
    ) {
        if self.shutting_down {
            // Taken while we were shutting down: give it back at once.
            self.lease.release(now, &shard, checkpoint, &mut self.mint);
            return;
        }
        if let Some(old) = self.shards.get(&shard) {
            // A re-acquisition while we still read it would be two readers.
            debug_assert!(
                false,
                "{shard:?} acquired while read (token {:?})",
                old.token
            );
            return;
        }
        let start = match checkpoint.as_ref().and_then(|c| c.resume_position()) {
            Some(p) => p,
            None => match self.config.start_from {
                StartFrom::Oldest => StartPosition::TrimHorizon,
                StartFrom::Latest => StartPosition::AtTimestamp {
                    unix_ms: created_ms,
                },
                StartFrom::Timestamp { unix_ms } => StartPosition::AtTimestamp { unix_ms },
            },
        };
        let consumer_arn = self
            .registrations
            .get(&shard.stream)
            .and_then(|r| r.arn().map(str::to_owned));
        let mode = ReaderMode::from_config(&self.config, consumer_arn);
        let seed = self.rng.next_u64();
        let mut reader = ShardReader::new(shard.clone(), start, mode, seed, now);
        if let Some((last, riu)) = self.spacing.remove(&shard) {
            reader.carry_subscribe_spacing(now, last, riu);
        }
        if self.closed.contains(&shard) {
            reader.mark_closed();
        }
        if let Some(range) = self.ranges.get(&shard) {
            reader.set_range(*range);
        }
        let ended = matches!(checkpoint, Some(Checkpoint::ShardEnd));
        let tracker = CheckpointTracker::new(checkpoint, self.config.checkpoint_limit);
        self.events.push_back(Event::LeaseAcquired {
            shard: shard.clone(),
            token,
        });
        let slot = self.shards.insert(
            shard.clone(),
            ShardState {
                token,
                reader: Some(reader),
                tracker,
                queue: VecDeque::new(),
                parked: None,
                inflight: BTreeSet::new(),
                redeliver: VecDeque::new(),
                phase: Phase::Reading,
                end_seen: ended,
                finishing: false,
                millis_behind: 0,
                open_since: None,
                deadline: None,
                holds_credit: false,
                touched: false,
                listed: false,
            },
        );
        if matches!(self.config.retrieval, Retrieval::Efo { .. })
            && self
                .shards
                .get(&shard)
                .and_then(|s| s.reader.as_ref())
                .is_some_and(|r| r.consumer_arn().is_none())
        {
            self.awaiting_arn.insert(shard.clone());
        }
        self.touch_slot(slot);
        if ended {
            self.stop_reading(&shard);
        }
    }

    /// Stop the reader of a shard and drop what was received but not
    /// delivered (the next reader reads it again from the checkpoint).
    fn stop_reading(&mut self, shard: &ShardRef) {
        let Some(slot) = self.shards.slot_of(shard) else {
            return;
        };
        let Some((_, st)) = self.shards.at_mut(slot) else {
            return;
        };
        Self::mark_touched(&mut self.dirty, slot, st);
        if let Some(mut reader) = st.reader.take() {
            if let Some(a) = reader.stop() {
                self.actions.push_back(a);
            }
            let (last, riu) = reader.subscribe_spacing();
            if last.is_some() || riu.is_some() {
                // Only spacing that can still matter is kept (bounded map).
                let now = self.now;
                self.spacing.retain(|_, (l, r)| {
                    l.is_some_and(|t| now < t + Duration::from_secs(1))
                        || r.is_some_and(|t| now < t + Duration::from_secs(5))
                });
                self.spacing.insert(shard.clone(), (last, riu));
            }
        }
        for q in st.queue.drain(..) {
            self.pool.release(q.permit);
            self.events.push_back(Event::ChunkDone { chunk: q.chunk });
        }
        if let Some(p) = st.parked.take() {
            self.events.push_back(Event::ChunkDone { chunk: p.chunk });
        }
        st.open_since = None;
        self.pool.cancel_wait(shard);
        self.reader_subs.retain(|_, s| s != shard);
    }

    /// The lease is gone: stop at once; in-flight batches can no longer be
    /// checkpointed by us.
    fn lost(&mut self, shard: &ShardRef, token: FencingToken, reason: LostReason) {
        if !self.shards.contains_key(shard) {
            return;
        }
        self.stop_reading(shard);
        let Some(slot) = self.shards.slot_of(shard) else {
            return;
        };
        let Some(st) = self.shards.remove(shard) else {
            return;
        };
        self.forget(shard, slot, &st);
        for id in st.inflight.iter().chain(st.redeliver.iter()) {
            if let Some((_, inf)) = self.batches.remove(id) {
                self.pool.release(inf.permit);
            }
        }
        if reason == LostReason::ShardEnded {
            self.events.push_back(Event::ShardEnded {
                shard: shard.clone(),
            });
        }
        self.events.push_back(Event::LeaseLost {
            shard: shard.clone(),
            token,
            reason,
        });
    }

    fn drain_registrations(&mut self, now: Instant) -> bool {
        let mut progress = false;
        let mut fatal = None;
        for (stream, reg) in self.registrations.iter_mut() {
            while let Some(a) = reg.poll_action(now, &mut self.mint) {
                self.actions.push_back(a);
                progress = true;
            }
            if let Some(arn) = reg.arn() {
                // Readers started before the ARN was known (the only ones
                // without it), in key order.
                for shard in self.awaiting_arn.iter().filter(|s| &s.stream == stream) {
                    let Some(slot) = self.shards.slot_of(shard) else {
                        continue;
                    };
                    let Some((_, st)) = self.shards.at_mut(slot) else {
                        continue;
                    };
                    if let Some(r) = st.reader.as_mut() {
                        if r.consumer_arn().is_none() {
                            r.set_consumer_arn(arn.to_owned());
                            Self::mark_touched(&mut self.dirty, slot, st);
                            progress = true;
                        }
                    }
                }
                self.awaiting_arn.retain(|s| &s.stream != stream);
            }
            if let Some(err) = reg.error() {
                if fatal.is_none() && !self.shutting_down {
                    fatal = Some(format!("{stream}: {err}"));
                }
            }
        }
        if let Some(message) = fatal {
            self.events.push_back(Event::Fatal { message });
            self.shutdown(now);
            progress = true;
        }
        progress
    }

    fn drain_readers(&mut self, now: Instant) -> bool {
        let mut progress = false;
        let slots = self.dirty_slots();
        for &slot in &slots {
            while let Some((shard, st)) = self.shards.at_mut(slot) {
                let Some(reader) = st.reader.as_mut() else {
                    break;
                };
                while let Some(action) = reader.poll_action(now, &mut self.mint) {
                    progress = true;
                    Self::route_into(&mut self.reader_ops, &mut self.reader_subs, shard, &action);
                    self.actions.push_back(action);
                }
                let Some(ev) = reader.poll_event() else {
                    break;
                };
                let shard = shard.clone();
                progress = true;
                match ev {
                    ReaderEvent::Chunk { chunk, data } => self.arrived(now, &shard, chunk, data),
                    ReaderEvent::End { children } => {
                        if let Some(st) = self.shards.get_mut(&shard) {
                            st.end_seen = true;
                        }
                        for child in &children {
                            self.ranges
                                .entry(ShardRef::new(shard.stream.clone(), child.shard.clone()))
                                .or_insert(child.hash_range);
                        }
                        if !children.is_empty() {
                            self.lease.handle_child_shards(
                                now,
                                &shard.stream,
                                &children,
                                &mut self.mint,
                            );
                        }
                    }
                    ReaderEvent::Failed { class } => {
                        self.stop_reading(&shard);
                        self.lease.quarantine(&shard, now + QUARANTINE);
                        let cp = self
                            .shards
                            .get(&shard)
                            .and_then(|s| s.tracker.watermark().cloned());
                        self.events.push_back(Event::ShardFailed {
                            shard: shard.clone(),
                            class,
                        });
                        if let Some(st) = self.shards.get_mut(&shard) {
                            st.phase = Phase::Leaving;
                        }
                        self.lease.release(now, &shard, cp, &mut self.mint);
                    }
                    ReaderEvent::Warning(message) => self.events.push_back(Event::Warning {
                        shard: Some(shard),
                        message,
                    }),
                }
            }
        }
        self.sorted = slots;
        progress
    }

    /// Remember which shard an action's answer belongs to.
    fn route_into(
        reader_ops: &mut BTreeMap<OpId, (ShardRef, Option<ChunkId>)>,
        reader_subs: &mut BTreeMap<SubId, ShardRef>,
        shard: &ShardRef,
        action: &Action,
    ) {
        match action {
            Action::Subscribe { sub, .. } => {
                reader_subs.insert(*sub, shard.clone());
            }
            Action::GetShardIterator { op, .. } => {
                reader_ops.insert(*op, (shard.clone(), None));
            }
            Action::GetRecords { op, chunk, .. } => {
                reader_ops.insert(*op, (shard.clone(), Some(*chunk)));
            }
            _ => {}
        }
    }

    /// A chunk arrived for a shard: admit it into the pool or park it.
    fn arrived(&mut self, now: Instant, shard: &ShardRef, chunk: ChunkId, data: Chunk) {
        let Some(slot) = self.shards.slot_of(shard) else {
            self.events.push_back(Event::ChunkDone { chunk });
            return;
        };
        let Some((_, st)) = self.shards.at_mut(slot) else {
            self.events.push_back(Event::ChunkDone { chunk });
            return;
        };
        Self::mark_touched(&mut self.dirty, slot, st);
        st.millis_behind = data.millis_behind;
        let (records, bytes) = (data.records.len() as u64, data.bytes());
        if records > 0 {
            let (r, b) = self.chunk_estimate;
            self.chunk_estimate = ((r * 7 + records).div_ceil(8), (b * 7 + bytes).div_ceil(8));
        }
        match self.pool.try_admit(records, bytes) {
            Ok(permit) => {
                if let Some(r) = st.reader.as_mut() {
                    r.admitted(chunk);
                }
                if data.records.is_empty() {
                    self.pool.release(permit);
                    self.events.push_back(Event::ChunkDone { chunk });
                } else {
                    if st.open_since.is_none() {
                        st.open_since = Some(now);
                    }
                    st.queue.push_back(Queued {
                        chunk,
                        records: data.records,
                        next: 0,
                        permit,
                        millis_behind: data.millis_behind,
                    });
                }
            }
            Err(_) => {
                self.stats.chunks_parked += 1;
                st.parked = Some(Parked { chunk, data });
                self.pool.wait(shard.clone());
            }
        }
    }

    /// Admit parked chunks in FIFO order as room frees up.
    fn admit_parked(&mut self, now: Instant) -> bool {
        let mut progress = false;
        while self.pool.has_room() {
            let Some(shard) = self.pool.poll_wake() else {
                break;
            };
            let Some(p) = self.shards.get_mut(&shard).and_then(|s| s.parked.take()) else {
                continue;
            };
            progress = true;
            let before = self.stats.chunks_parked;
            self.arrived(now, &shard, p.chunk, p.data);
            if self.stats.chunks_parked != before {
                // Still does not fit: it waits again (it fits once the pool
                // is empty at the latest).
                self.stats.chunks_parked = before;
                break;
            }
        }
        progress
    }

    /// Give one unit of credit to each reader that wants one, while the pool
    /// has room, starting after the last served shard (round robin). Only
    /// `wanting` shards can take credit; touched shards are re-judged first.
    fn grant_credit(&mut self, now: Instant) -> bool {
        for &slot in &self.dirty {
            if let Some((_, st)) = self.shards.at_mut(slot) {
                Self::recount_credit(
                    &mut self.credit_outstanding,
                    &mut self.wanting,
                    now,
                    slot,
                    st,
                );
            }
        }
        if !self.pool.has_room() || self.wanting.is_empty() {
            return false;
        }
        let mut outstanding = self.credit_outstanding;
        let mut order = std::mem::take(&mut self.scratch);
        order.clear();
        order.extend_from_slice(&self.wanting);
        Self::sort_by_shard(&self.shards, &mut order);
        if let Some(c) = &self.credit_cursor {
            // Round robin: the shards after the last one served first.
            let after = order.partition_point(|&s| self.shards.at(s).is_some_and(|(k, _)| k <= c));
            order.rotate_left(after);
        }
        let mut progress = false;
        for &slot in &order {
            if !self.pool.has_room() || !self.credit_fits(outstanding + 1) {
                break;
            }
            let free = self
                .config
                .pool_records
                .saturating_sub(self.pool.used_records());
            let limit = u32::try_from(free).unwrap_or(u32::MAX);
            let Some((shard, st)) = self.shards.at_mut(slot) else {
                continue;
            };
            if !st.wants_credit(now) {
                continue;
            }
            let Some(reader) = st.reader.as_mut() else {
                continue;
            };
            if let Some(action) = reader.grant(now, limit, &mut self.mint) {
                outstanding += 1;
                Self::recount_credit(
                    &mut self.credit_outstanding,
                    &mut self.wanting,
                    now,
                    slot,
                    st,
                );
                Self::mark_touched(&mut self.dirty, slot, st);
                Self::route_into(&mut self.reader_ops, &mut self.reader_subs, shard, &action);
                self.actions.push_back(action);
                self.credit_cursor = Some(shard.clone());
                progress = true;
            }
        }
        self.scratch = order;
        progress
    }

    /// Whether `reads` outstanding reads, each reserving one estimated chunk,
    /// fit in the pool next to what is admitted. The first read into an
    /// empty pool always fits (an oversized chunk is admitted alone).
    fn credit_fits(&self, reads: u64) -> bool {
        let (used_r, used_b) = self.pool_used();
        if reads <= 1 && used_r == 0 && used_b == 0 {
            return true;
        }
        let (est_r, est_b) = self.chunk_estimate;
        used_r.saturating_add(reads.saturating_mul(est_r)) <= self.config.pool_records
            && used_b.saturating_add(reads.saturating_mul(est_b)) <= self.config.pool_bytes
    }

    /// Cut batches out of admitted chunks and redeliver nacked ones.
    fn deliver(&mut self, now: Instant) -> bool {
        let mut progress = false;
        let batching = self.config.batching;
        let slots = self.dirty_slots();
        for &slot in &slots {
            let Some((shard, st)) = self.shards.at_mut(slot) else {
                continue;
            };
            if st.phase != Phase::Reading {
                continue;
            }
            while let Some(id) = st.redeliver.pop_front() {
                if let Some((_, inf)) = self.batches.get_mut(&id) {
                    inf.nacked = false;
                    let mut batch = inf.batch.clone();
                    batch.redelivery = true;
                    self.stats.batches_delivered += 1;
                    self.stats.redeliveries += 1;
                    self.stats.records_delivered += u64::from(batch.len());
                    self.events.push_back(Event::Batch(batch));
                    progress = true;
                }
            }
            while let Some(q) = st.queue.front_mut() {
                let available = (q.records.len() as u32).saturating_sub(q.next);
                let mut n = available.min(batching.count);
                if batching.byte_size > 0 {
                    let mut bytes = 0u64;
                    let mut k = 0u32;
                    for r in &q.records[q.next as usize..(q.next + n) as usize] {
                        if k > 0 && bytes + u64::from(r.bytes) > batching.byte_size {
                            break;
                        }
                        bytes += u64::from(r.bytes);
                        k += 1;
                    }
                    n = k.max(1);
                }
                let full =
                    n == batching.count || n < available || st.queue.len() > 1 || st.end_seen;
                if let (false, Some(period)) = (full, batching.period) {
                    if st.open_since.is_some_and(|since| now < since + period) {
                        break;
                    }
                }
                if n == 0 || !st.tracker.can_deliver(n) {
                    break;
                }
                let q = st.queue.front_mut().expect("checked");
                let range = q.next..q.next + n;
                let recs = &q.records[range.start as usize..range.end as usize];
                let (Some(first), Some(last)) = (recs.first(), recs.last()) else {
                    break;
                };
                let bytes: u64 = recs.iter().map(|r| u64::from(r.bytes)).sum();
                let Ok(slot) = st.tracker.deliver(last.ext.clone(), last.last_sub, n) else {
                    // Out-of-order records from the runtime: drop the rest
                    // of this chunk rather than corrupt the checkpoint.
                    let q = st.queue.pop_front().expect("checked");
                    self.pool.release(q.permit);
                    self.events.push_back(Event::ChunkDone { chunk: q.chunk });
                    self.events.push_back(Event::Warning {
                        shard: Some(shard.clone()),
                        message: "records out of sequence order were dropped; they are read again after a restart".into(),
                    });
                    continue;
                };
                let id = self.mint.batch();
                let batch = BatchMeta {
                    id,
                    shard: shard.clone(),
                    token: st.token,
                    chunk: q.chunk,
                    range: range.clone(),
                    first: first.ext.clone(),
                    last: last.ext.clone(),
                    bytes,
                    millis_behind: q.millis_behind,
                    redelivery: false,
                };
                let permit = self.pool.split(&mut q.permit, u64::from(n), bytes);
                q.next += n;
                // ChunkDone goes out after this batch: a runtime frees the
                // payload on ChunkDone, and this batch still needs it.
                let mut chunk_done = None;
                if q.next as usize >= q.records.len() {
                    let q = st.queue.pop_front().expect("checked");
                    // Rounding leftovers of the chunk's permit.
                    self.pool.release(q.permit);
                    chunk_done = Some(q.chunk);
                }
                st.open_since = if st.queue.is_empty() { None } else { Some(now) };
                st.inflight.insert(id);
                self.stats.batches_delivered += 1;
                self.stats.records_delivered += u64::from(n);
                self.batches.insert(
                    id,
                    (
                        shard.clone(),
                        Inflight {
                            slot,
                            permit,
                            batch: batch.clone(),
                            nacked: false,
                        },
                    ),
                );
                self.events.push_back(Event::Batch(batch));
                if let Some(chunk) = chunk_done {
                    self.events.push_back(Event::ChunkDone { chunk });
                }
                progress = true;
            }
        }
        self.sorted = slots;
        progress
    }

    /// Shard end, hand-off and shutdown completion.
    fn advance_phases(&mut self, now: Instant) -> bool {
        let mut progress = false;
        let slots = self.dirty_slots();
        for &slot in &slots {
            let Some((shard, st)) = self.shards.at_mut(slot) else {
                continue;
            };
            match st.phase {
                Phase::Reading => {
                    let received_all = st.end_seen && st.queue.is_empty() && st.parked.is_none();
                    if received_all && !st.finishing {
                        st.tracker.mark_shard_end();
                        if st.tracker.is_drained() && st.redeliver.is_empty() {
                            st.finishing = true;
                            if let Some(a) = st.reader.take().and_then(|mut r| r.stop()) {
                                self.actions.push_back(a);
                            }
                            self.lease.finish_shard(now, shard, &mut self.mint);
                            progress = true;
                        }
                    }
                }
                Phase::HandingOff { deadline } => {
                    if st.inflight.is_empty() || now >= deadline {
                        let shard = shard.clone();
                        self.leave(now, &shard);
                        progress = true;
                    }
                }
                Phase::Closing => {
                    if st.inflight.is_empty() {
                        let shard = shard.clone();
                        self.leave(now, &shard);
                        progress = true;
                    }
                }
                Phase::Leaving => {}
            }
        }
        self.sorted = slots;
        progress
    }

    /// Final checkpoint, then transfer (hand-off) or release (shutdown).
    fn leave(&mut self, now: Instant, shard: &ShardRef) {
        self.stop_reading(shard);
        let Some(st) = self.shards.get_mut(shard) else {
            return;
        };
        let final_cp = st.tracker.watermark().cloned();
        let phase = std::mem::replace(&mut st.phase, Phase::Leaving);
        match phase {
            Phase::HandingOff { .. } => self.lease.transfer(now, shard, final_cp, &mut self.mint),
            Phase::Leaving => {}
            Phase::Reading | Phase::Closing => {
                if st.finishing {
                    // SHARD_END already on its way.
                    st.phase = Phase::Leaving;
                } else {
                    self.lease.release(now, shard, final_cp, &mut self.mint)
                }
            }
        }
    }

    fn maybe_complete_shutdown(&mut self) {
        if self.shutting_down && !self.done && self.shards.is_empty() && self.lease.is_shut_down() {
            self.done = true;
            self.timers = TimerTable::default();
            self.events.push_back(Event::ShutdownComplete);
        }
    }

    fn commit(&mut self, now: Instant) {
        for (shard, st) in self.shards.iter() {
            if st.phase == Phase::Leaving || st.finishing {
                continue;
            }
            if let Some(cp) = st.tracker.to_write() {
                if cp != Checkpoint::ShardEnd {
                    self.lease.write_checkpoint(now, shard, cp, &mut self.mint);
                }
            }
        }
    }
}

#[cfg(test)]
#[path = "worker_tests.rs"]
mod tests;

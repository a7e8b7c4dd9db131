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
//!   [`Worker::pool_used`], [`Worker::stats`], [`Worker::leases`].
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
//! The concepts, one file each (each file's doc states its rules):
//! - `shards`: the per-shard state, the slot table and the indexes of
//!   touched shards, credit and deadlines that `pump` visits.
//! - `read`: starting and stopping readers, draining readers and EFO
//!   registrations, routing answers to the reader that asked (by what
//!   each reader says it awaits, never by looking inside its actions).
//! - `deliver`: admission into the pool, parked chunks, read credit,
//!   batch delivery and the bookkeeping of acks and nacks.
//! - `batcher`: the batch-cutting rule, a pure function.
//! - `lifecycle`: lease events, hand-off and leaving, commits, shutdown.
//!
//! This file holds the public types, the getters, the `handle_*` inputs,
//! the commands, the `poll_*` outputs and `pump`, which runs the others
//! until nothing changes.
//!
//! Drain order: after every input or command, drain `poll_action` until
//! `None` and `poll_event` until `None` (either order; neither depends on
//! the other being drained first), then wait for the next input or for
//! `poll_timeout`.

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::time::Instant;

use crate::config::{Config, ConfigError, Retrieval};
use crate::health::{Health, HealthTracker};
use crate::ids::{BatchId, ChunkId, FencingToken, IdMint, OpId, Owner, ShardRef, StreamId, SubId};
use crate::io::{Action, Event, Input};
use crate::kpl::HashRange;
use crate::lease::{LeaseManager, LeaseView};
use crate::pool::Pool;
use crate::registration::Registration;
use crate::rng::Rng;
use crate::sequence::SeqNum;
use crate::sequence::{Checkpoint, StartPosition};
use crate::timer::{Timer, TimerTable};

mod batcher;
mod calls;
mod deliver;
mod lifecycle;
mod read;
mod shards;

#[cfg(test)]
mod tests;

use deliver::Inflight;
use lifecycle::Phase;
use shards::{ShardTable, StateSlot};

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
    /// Batches handed to the dead-letter handler (`max_deliveries`
    /// reached), each counted once.
    pub dead_letters: u64,
    /// Acks applied.
    pub acks: u64,
    /// Chunks that arrived and waited for pool room.
    pub chunks_parked: u64,
    /// Reads whose answer brought more than the room reserved for them
    /// (admitted over the budget: the bytes were already in memory).
    pub reads_over_reservation: u64,
    /// GetShardIterator and GetRecords calls that waited for a slot
    /// (`Config::max_read_calls_in_flight` were in flight).
    pub read_calls_queued: u64,
}

/// What the worker knows about one shard it reads (a getter's view).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ShardStatus {
    /// Fencing token of the lease.
    pub token: FencingToken,
    /// End of the contiguously acknowledged prefix.
    pub watermark: Option<Checkpoint>,
    /// Last checkpoint known stored (the lease's: the one it was acquired
    /// with until a write succeeds).
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
    /// Boxed: a map value stays two words, so inserting and removing a
    /// batch (once each per batch) moves no large values inside the B-tree.
    batches: BTreeMap<BatchId, (ShardRef, Box<Inflight>)>,
    /// Nacked batches waiting out a non-zero redelivery backoff, by due
    /// instant (entries of batches acked or dropped since are skipped).
    redeliver_at: BTreeSet<(Instant, BatchId)>,
    /// ListShards in flight.
    list_ops: BTreeMap<OpId, StreamId>,
    /// Shards whose read failed with ResourceNotFound, held (not read)
    /// until a ListShards sent after the failure (op id at least this one)
    /// answers: a shard it lacks is gone (trimmed past retention, or of a
    /// stream deleted and recreated) and ends; a listed one failed.
    gone_checks: BTreeMap<ShardRef, OpId>,
    /// What readers awaited, by op and subscription (`read::route_awaited`,
    /// after every action a reader emits): routes answers to their shard
    /// and frees the chunks of stale ones.
    reader_ops: BTreeMap<OpId, (ShardRef, Option<ChunkId>)>,
    /// GetShardIterator and GetRecords out at the driver, at most
    /// `max_read_calls_in_flight`, and those waiting for a slot (FIFO).
    read_calls: calls::ReadCalls,
    reader_subs: BTreeMap<SubId, ShardRef>,
    /// Shards ListShards reported closed, with their EndingSequenceNumber.
    closed: BTreeMap<ShardRef, SeqNum>,
    /// Hash ranges of the shards ListShards and ChildShards reported (each
    /// reader carries its shard's in every read, for KPL filtering). A
    /// ListShards answer replaces its stream's ranges, so shards gone from
    /// the stream are forgotten.
    ranges: BTreeMap<ShardRef, HashRange>,
    /// Subscriptions of stopped readers whose answer may still come (a
    /// ResourceInUse after the lease was lost still spaces the shard's next
    /// SubscribeToShard), with when the reader stopped; pruned after
    /// `read::STOPPED_SUB_MEMORY`.
    stopped_subs: BTreeMap<SubId, (ShardRef, Instant)>,
    /// SubscribeToShard spacing of stopped readers, for the next reader of
    /// the same shard (AWS: 1 s between calls, 5 s after ResourceInUse).
    spacing: BTreeMap<ShardRef, (Option<Instant>, Option<Instant>)>,
    timers: TimerTable,
    actions: VecDeque<Action>,
    events: VecDeque<Event>,
    /// Refusals retrying cannot fix, per service ([`crate::health`]).
    health: HealthTracker,
    shutting_down: bool,
    done: bool,
    credit_cursor: Option<ShardRef>,
    /// The last credit round stopped for want of pool room with readers
    /// still asking (their reads wait for acks to free the budget).
    credit_blocked: bool,
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
    /// Shards read whose reader got no answer yet (sum of
    /// `ShardState::fresh`).
    fresh: u64,
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
        let health = HealthTracker::new(config.unhealthy_after);
        let mut timers = TimerTable::default();
        timers.set(Timer::Commit, now + config.commit_period);
        timers.set(Timer::ShardSync, now);
        let read_calls = calls::ReadCalls::new(config.max_read_calls_in_flight);
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
            redeliver_at: BTreeSet::new(),
            list_ops: BTreeMap::new(),
            gone_checks: BTreeMap::new(),
            reader_ops: BTreeMap::new(),
            read_calls,
            reader_subs: BTreeMap::new(),
            closed: BTreeMap::new(),
            ranges: BTreeMap::new(),
            stopped_subs: BTreeMap::new(),
            spacing: BTreeMap::new(),
            timers,
            actions: VecDeque::new(),
            events: VecDeque::new(),
            health,
            shutting_down: false,
            done: false,
            credit_cursor: None,
            credit_blocked: false,
            dirty: Vec::new(),
            wanting: Vec::new(),
            credit_outstanding: 0,
            fresh: 0,
            deadlines: BTreeSet::new(),
            awaiting_arn: BTreeSet::new(),
            dirty_epoch: 1,
            sorted: Vec::new(),
            sorted_at: (0, 0),
            scratch: Vec::new(),
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

    /// Whether every call to a service has been refused with an error
    /// retrying cannot fix (credentials, access, KMS) for longer than
    /// `unhealthy_after`, as of the last input or timeout.
    pub fn health(&self) -> Health {
        self.health.health(self.now)
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
            durable: self.lease.durable(shard).cloned(),
            pending_records: st.tracker.pending_records(),
            queued_records: st.queued_records(),
            resume: st
                .reader
                .as_ref()
                .and_then(|r| r.resume_position().cloned()),
            millis_behind: st.millis_behind,
        })
    }

    /// Whether `shard`'s reader waits for pool room: it asks for credit
    /// and the last credit round stopped because the budget was used up
    /// (by this worker's other shards' reads and unacknowledged batches).
    /// Such a shard waits for the sink, not for a hung request; the
    /// simulator's stall oracle does not count it due.
    pub fn waits_for_pool(&self, shard: &ShardRef, now: Instant) -> bool {
        self.credit_blocked
            && self
                .shards
                .get(shard)
                .is_some_and(|st| st.wants_credit(now))
    }

    /// Pool usage: (records, bytes).
    pub fn pool_used(&self) -> (u64, u64) {
        (self.pool.used_records(), self.pool.used_bytes())
    }

    /// The pool room (records, bytes) reserved for the read in flight whose
    /// answer comes under `chunk`; `None` when no read of that chunk is
    /// outstanding. The simulator checks every read it sees is reserved.
    pub fn read_reservation(&self, chunk: ChunkId) -> Option<(u64, u64)> {
        self.shards
            .iter()
            .find_map(|(_, st)| match &st.reservation {
                Some((c, p)) if *c == chunk => Some((p.records(), p.bytes())),
                _ => None,
            })
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
        let mut fresh = 0u64;
        // Both maps are ordered by shard: walk them side by side.
        let mut held = self.lease.held();
        let mut next_held = held.next();
        for (shard, st) in self.shards.iter() {
            fresh += u64::from(st.fresh);
            if let Some((_, permit)) = &st.reservation {
                records += permit.records();
                bytes += permit.bytes();
            }
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
        if fresh != self.fresh {
            return Err(format!(
                "{fresh} shards without an answer yet, counted {}",
                self.fresh
            ));
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
        if self.read_calls.sent() > self.read_calls.limit()
            || self.read_calls.sent() + self.read_calls.waiting() != self.reader_ops.len()
        {
            return Err(format!(
                "{} read calls sent (limit {}) and {} waiting, {} reader ops awaited",
                self.read_calls.sent(),
                self.read_calls.limit(),
                self.read_calls.waiting(),
                self.reader_ops.len()
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

    // ----- inputs --------------------------------------------------------

    /// Feed an answer or a stream event. Inputs with ids the worker does not
    /// know (stale, duplicated) are ignored; their chunks are freed with
    /// [`Event::ChunkDone`].
    pub fn handle_input(&mut self, now: Instant, mut input: Input) {
        self.set_now(now);
        if self.done {
            self.free_stale_chunk(&input);
            return;
        }
        if let Some(health) = self.health.observe(now, &input) {
            self.events.push_back(Event::Health(health));
        }
        match &input {
            Input::Shards { op, result } => self.on_shards(now, *op, result),
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
                        Self::route_input(&mut self.shards, &mut self.dirty, now, shard, &mut input)
                    }
                    None => false,
                };
                if !consumed {
                    self.stopped_sub_answered(now, &input);
                    self.free_stale_chunk(&input);
                }
            }
            Input::Iterator { op, .. } | Input::Records { op, .. } => {
                let routed = self.op_answered(*op);
                let consumed = match &routed {
                    Some((shard, _)) => {
                        Self::route_input(&mut self.shards, &mut self.dirty, now, shard, &mut input)
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
            | Input::HeartbeatWritten { .. }
            | Input::HeartbeatDeleted { .. }
            | Input::LeaseDeleted { .. } => {
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
        self.apply_ack(batch)?;
        self.pump(now);
        Ok(())
    }

    /// The application could not process a batch: it is delivered again
    /// (while the lease is held and the shard is being read) after the
    /// redelivery backoff, and the checkpoint stays before it. Past
    /// `max_deliveries` it is offered as [`Event::DeadLetter`] instead (a
    /// nacked dead letter is offered again after the backoff).
    pub fn nack(&mut self, now: Instant, batch: BatchId) -> Result<(), AckError> {
        self.set_now(now);
        self.apply_nack(now, batch)?;
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
        self.begin_shutdown(now);
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
        consider(self.redeliver_at.first().map(|(at, _)| (*at, "redelivery")));
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

    /// Run every machine until nothing changes. Shards are visited only
    /// when touched since the last pump or when a deadline of theirs is
    /// reached (plus the credit round over `wanting`): a shard nobody
    /// touched has nothing to do, so this is the same as walking them all.
    fn pump(&mut self, now: Instant) {
        self.redeliveries_due(now);
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
}

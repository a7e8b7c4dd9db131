//! Leases: which worker reads which shard, proved by a fencing token in the
//! lease table (SPEC section 4), with liveness judged by observation.
//!
//! Models: one worker's side of the leaderless lease protocol. The
//! [`LeaseManager`] keeps this worker's heartbeat row alive, observes every
//! other worker's heartbeat on its own monotonic clock, keeps a view of the
//! lease rows of each configured stream, takes free and expired leases,
//! asks the most loaded workers for graceful hand-offs, hands its own leases
//! over when asked, writes conditional checkpoints, and gives leases up at
//! shard end, on a fatal shard error and at shutdown. It only emits
//! [`Action::ReadLeases`], [`Action::WriteLease`], [`Action::ReadHeartbeats`]
//! and [`Action::WriteHeartbeat`]; their answers come back through
//! `LeaseManager::handle_input`. What it decides reaches the worker as
//! [`LeaseEvent`]s.
//!
//! The concepts, one file each (each file's doc states its rules):
//! - `liveness`: our heartbeat, the observation of everyone else's, the
//!   expiry verdicts and the self-fence (SPEC 4, liveness by observation).
//! - `view`: the last read of each stream's rows, the read schedule,
//!   reconciling a fresh read with what we hold and asked for, and row
//!   creation (SPEC 4 and 5, resharding).
//! - `balance`: the balancing rule, a pure function from the view, the
//!   liveness verdicts and our load to a plan; this file executes the plan.
//! - `write`: held leases and the one-write-in-flight pipeline of each
//!   shard (conditional takes, checkpoints, final writes, their answers).
//!
//! This file holds the public types, the getters, the `handle_*` inputs,
//! the commands, the `poll_*` outputs, the drive that sends what is due and
//! the execution of the balancing plan.
//!
//! - Shared tables: our heartbeat row lists the streams we consume, and
//!   our leases are balanced only among live workers that consume all of
//!   them (`liveness`); a row the store could not decode never reaches us
//!   (the store names it and skips it), so its shard is not taken.
//! - Shutdown: after the last release, one more read of every stream with
//!   a hand-off request of ours outstanding, so a lease transferred to us
//!   meanwhile is released rather than left to our dead incarnation; a
//!   worker fenced on the way out still sends its final writes (they are
//!   conditional on its token) before its final heartbeat.
//!
//! Invariants (checked by `LeaseManager::check_invariants` and the tests):
//! at most one held entry per shard; a fenced manager holds nothing; the
//! manager never emits a take of a row it owns; at most one lease write per
//! shard is in flight (so the answers of one lease apply in order); the
//! token in [`LeaseEvent::Acquired`] is the row's token after the write; a
//! table read sent before an answer about a shard never overrides what that
//! answer taught (stale reads are ignored per shard); iteration is in
//! `BTreeMap` order, so the same inputs give the same actions.

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::time::{Duration, Instant};

use crate::config::Config;
use crate::ids::{FencingToken, IdMint, OpId, Owner, ShardRef, StreamId};
use crate::io::{Action, ChildShard, Input, LostReason, ShardInfo};
use crate::sequence::Checkpoint;
use crate::table::{LeaseRow, LeaseWrite};

mod balance;
mod liveness;
mod view;
mod write;

#[cfg(test)]
mod tests;

use balance::{Ask, Load, Request, RequestState, Take};
use liveness::Liveness;
use view::StreamView;
use write::{FinalState, Leaving, WriteKind, Writes};

/// What the lease manager tells the worker.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum LeaseEvent {
    /// Start reading this shard.
    Acquired {
        /// Which shard.
        shard: ShardRef,
        /// The lease's fencing token (the row's token after the take).
        token: FencingToken,
        /// Where the previous owner got to (`None` = never checkpointed).
        checkpoint: Option<Checkpoint>,
        /// Row creation time (unix ms), for LATEST anchoring.
        created_ms: u64,
    },
    /// Stop reading at once, drop undelivered data; no more checkpoints for
    /// it.
    Lost {
        /// Which shard.
        shard: ShardRef,
        /// The token it was held with.
        token: FencingToken,
        /// Why.
        reason: LostReason,
    },
    /// A later incarnation of our worker id (another process with the same
    /// id, or our own restart seen by a zombie) wrote its heartbeat row:
    /// this manager fenced itself for good and writes no more heartbeats.
    Superseded {
        /// The later incarnation.
        by: Owner,
    },
    /// A taker asked for this shard: the worker stops reading, waits for
    /// in-flight acks (`handoff_timeout`), then calls `transfer`.
    HandoffRequested {
        /// Which shard.
        shard: ShardRef,
        /// The taker.
        to: Owner,
    },
    /// The table holds rows of an earlier stream of the same name
    /// (`StreamView::earlier_stream`): nothing is taken, created or
    /// collected on this stream; the worker stops with `message`.
    EarlierStream {
        /// The stream.
        stream: StreamId,
        /// What was found and which rows to delete.
        message: String,
    },
    /// A conditional checkpoint write succeeded.
    CheckpointWritten {
        /// Which shard.
        shard: ShardRef,
        /// The checkpoint now stored.
        checkpoint: Checkpoint,
    },
}

/// Counters of the lease manager's DynamoDB traffic (SPEC cost targets).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct LeaseStats {
    /// Heartbeat row writes sent.
    pub heartbeat_writes: u64,
    /// Checkpoint writes sent.
    pub checkpoint_writes: u64,
    /// Create, take, hand-off request, transfer and release writes sent.
    pub other_lease_writes: u64,
    /// Lease table reads (one Query per stream) sent.
    pub lease_reads: u64,
    /// Heartbeat table reads sent.
    pub heartbeat_reads: u64,
    /// Lease writes refused by their condition.
    pub conditional_failures: u64,
    /// Heartbeat rows of gone workers deleted.
    pub heartbeats_deleted: u64,
    /// Lease rows of drained shards deleted (their children checkpointed).
    pub lease_rows_deleted: u64,
}

/// What an outside caller (a runtime, the simulator, a status view) may see
/// of the lease manager: read-only, from [`crate::Worker::leases`].
#[derive(Clone, Copy, Debug)]
pub struct LeaseView<'a>(&'a LeaseManager);

impl<'a> LeaseView<'a> {
    /// Whether this worker has fenced itself (could not renew its heartbeat
    /// in time) and so delivers and checkpoints nothing.
    pub fn is_fenced(&self) -> bool {
        self.0.is_fenced()
    }

    /// Live workers as this worker judges them (itself included).
    pub fn live_workers(&self) -> usize {
        self.0.live_workers()
    }

    /// The lease rows of `stream` as of the last table read.
    pub fn table(&self, stream: &StreamId) -> impl Iterator<Item = &'a LeaseRow> {
        self.0.table(stream)
    }

    /// DynamoDB traffic counters.
    pub fn stats(&self) -> &'a LeaseStats {
        self.0.stats()
    }
}

/// The timing knobs of [`Config`] the protocol uses.
#[derive(Clone, Copy, Debug)]
struct Timing {
    failover: Duration,
    heartbeat: Duration,
    heartbeat_read: Duration,
    fence_after: Duration,
    /// A worker whose last successful heartbeat read was sent this long
    /// ago may have missed a hand-off request that a taker will force
    /// `2 * handoff` after publishing it: it fences first.
    blind_after: Duration,
    rebalance: Duration,
    handoff: Duration,
    /// `max_lease_writes_in_flight`: past it, checkpoint writes wait.
    max_writes: usize,
}

impl Timing {
    /// Wait before retrying a write or read that failed without being
    /// applied.
    fn retry(&self) -> Duration {
        self.heartbeat_read.min(self.heartbeat)
    }
}

/// An operation in flight.
#[derive(Clone, Debug)]
enum Op {
    ReadLeases {
        stream: StreamId,
        sent: Instant,
        sent_seq: u64,
    },
    ReadHeartbeats {
        sent: Instant,
        sent_seq: u64,
    },
    WriteHeartbeat {
        sent: Instant,
        alive: bool,
        /// The hand-off requests it lists (published once it succeeds).
        wants: Vec<ShardRef>,
    },
    WriteLease {
        write: LeaseWrite,
        kind: WriteKind,
        /// The row the write was computed from (our view at send time).
        base: Box<Option<LeaseRow>>,
    },
    DeleteHeartbeat {
        owner: Owner,
    },
    DeleteLease {
        shard: ShardRef,
    },
}

/// The final heartbeat (alive = false) at shutdown.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum FinalBeat {
    NotYet,
    Sent,
    Done,
}

/// One worker's side of the lease protocol (SPEC section 4).
///
/// Methods, as in quinn-proto's `Connection`:
/// - getters: [`held`](Self::held), [`token`](Self::token),
///   [`is_fenced`](Self::is_fenced), [`live_workers`](Self::live_workers),
///   [`table`](Self::table), [`stats`](Self::stats),
///   [`is_shut_down`](Self::is_shut_down);
/// - inputs: `handle_timeout`, `handle_input` (answers to our own ops),
///   `handle_shards` (ListShards), `handle_child_shards` (shard end);
/// - commands: `write_checkpoint`, `transfer`, `finish_shard`, `release`,
///   [`quarantine`](Self::quarantine), `shutdown`;
/// - outputs: [`poll_action`](Self::poll_action),
///   [`poll_event`](Self::poll_event), [`poll_timeout`](Self::poll_timeout),
///   drained after every input or command.
#[derive(Debug)]
pub struct LeaseManager {
    me: Owner,
    /// `Config::explicit_shards`: empty = balanced.
    explicit: BTreeSet<ShardRef>,
    timing: Timing,
    start: Instant,
    start_unix_ms: u64,
    /// Logical clock ordering table reads against write answers.
    seq: u64,

    /// Our heartbeat and our observation of everyone else's.
    live: Liveness,

    views: BTreeMap<StreamId, StreamView>,
    /// Held leases and the lease writes in flight.
    writes: Writes,
    requests: BTreeMap<ShardRef, Request>,
    quarantined: BTreeMap<ShardRef, Instant>,
    ops: BTreeMap<OpId, Op>,
    shutting_down: bool,
    /// At shutdown: streams whose lease rows must be read once more (a read
    /// sent after `seq` = the value, answered or failed) before the final
    /// heartbeat, because a hand-off we asked for may have completed: a
    /// row transferred to us is then released instead of being left to our
    /// dead incarnation.
    final_reads: BTreeMap<StreamId, u64>,
    /// Lease rows of drained shards whose delete is in flight.
    deleting: BTreeSet<ShardRef>,
    /// Streams whose table showed rows of an earlier stream of the same
    /// name ([`LeaseEvent::EarlierStream`] sent once each).
    earlier: BTreeSet<StreamId>,
    final_beat: FinalBeat,

    actions: VecDeque<Action>,
    events: VecDeque<LeaseEvent>,
    stats: LeaseStats,
    violation: Option<String>,
}

impl LeaseManager {
    /// A manager for `config.owner` on `config.streams`. `unix_ms` is the
    /// wall clock at `now` (wall time later is `unix_ms + (now - start)`,
    /// used only for the `created_ms` of new rows).
    pub fn new(config: &Config, now: Instant, unix_ms: u64) -> Self {
        let timing = Timing {
            failover: config.failover_time,
            heartbeat: config.heartbeat_interval,
            heartbeat_read: config.heartbeat_read_interval,
            fence_after: config
                .failover_time
                .saturating_sub(config.self_fence_margin),
            blind_after: (config.handoff_timeout * 2).saturating_sub(config.self_fence_margin),
            rebalance: config.rebalance_period,
            handoff: config.handoff_timeout,
            max_writes: config.max_lease_writes_in_flight,
        };
        let views = config
            .streams
            .iter()
            .map(|s| {
                (
                    s.clone(),
                    StreamView {
                        rows: BTreeMap::new(),
                        owners: BTreeMap::new(),
                        have_view: false,
                        reading: false,
                        read_again: false,
                        next_read: now,
                        reply_seq: 0,
                        confirm: false,
                        listed: false,
                        known: BTreeMap::new(),
                        mentioned: BTreeSet::new(),
                        listing: BTreeMap::new(),
                        deferred: BTreeMap::new(),
                    },
                )
            })
            .collect();
        LeaseManager {
            me: config.owner.clone(),
            explicit: config.explicit_shards.clone(),
            timing,
            start: now,
            start_unix_ms: unix_ms,
            seq: 0,
            live: Liveness::new(
                config.owner.clone(),
                config.streams.clone(),
                timing.failover,
                now,
            ),
            views,
            writes: Writes {
                now: Some(now),
                ..Writes::default()
            },
            requests: BTreeMap::new(),
            quarantined: BTreeMap::new(),
            ops: BTreeMap::new(),
            shutting_down: false,
            final_reads: BTreeMap::new(),
            deleting: BTreeSet::new(),
            earlier: BTreeSet::new(),
            final_beat: FinalBeat::NotYet,
            actions: VecDeque::new(),
            events: VecDeque::new(),
            stats: LeaseStats::default(),
            violation: None,
        }
    }

    // ----- getters -------------------------------------------------------

    /// Leases this worker may read (not fenced, not lost), with their tokens.
    pub fn held(&self) -> impl Iterator<Item = (&ShardRef, FencingToken)> {
        self.writes.held.iter().map(|(s, h)| (s, h.token))
    }

    /// The token of a held lease.
    #[cfg(test)]
    pub fn token(&self, shard: &ShardRef) -> Option<FencingToken> {
        self.writes.held.get(shard).map(|h| h.token)
    }

    /// True while the worker could not renew its heartbeat in time: it holds
    /// nothing and takes nothing.
    pub fn is_fenced(&self) -> bool {
        self.live.fenced
    }

    /// Live workers as last observed, this one included.
    pub fn live_workers(&self) -> usize {
        self.live.live_workers()
    }

    /// The checkpoint known stored for a held lease: the row's when it was
    /// acquired, then the highest of our writes that succeeded. The only
    /// copy of the durable checkpoint (the worker keeps the watermark).
    pub(crate) fn durable(&self, shard: &ShardRef) -> Option<&Checkpoint> {
        self.writes.held.get(shard)?.confirmed.as_ref()
    }

    /// Whether [`Self::write_checkpoint`] would take `cp` now: the lease is
    /// held and not leaving, and `cp` is ahead of what is stored, in flight
    /// and queued. Read-only: the worker asks before it writes.
    pub(crate) fn checkpoint_wanted(&self, shard: &ShardRef, cp: &Checkpoint) -> bool {
        self.writes.held.get(shard).is_some_and(|h| {
            h.leaving.is_none()
                && [&h.confirmed, &h.cp_sent, &h.cp_queued]
                    .into_iter()
                    .flatten()
                    .max()
                    .is_none_or(|newest| cp > newest)
        })
    }

    /// The read-only view for callers outside the core.
    pub fn view(&self) -> LeaseView<'_> {
        LeaseView(self)
    }

    /// The last view of a stream's lease rows (with our own successful
    /// writes applied).
    pub fn table(&self, stream: &StreamId) -> impl Iterator<Item = &LeaseRow> {
        self.views
            .get(stream)
            .into_iter()
            .flat_map(|v| v.rows.values())
    }

    /// Traffic counters.
    pub fn stats(&self) -> &LeaseStats {
        &self.stats
    }

    /// Shutdown finished: every lease released and the final heartbeat
    /// (`alive = false`) answered, whatever the answer.
    pub fn is_shut_down(&self) -> bool {
        self.final_beat == FinalBeat::Done
    }

    /// Internal consistency, for the worker's and the simulator's oracles.
    pub(crate) fn check_invariants(&self) -> Result<(), String> {
        if let Some(v) = &self.violation {
            return Err(v.clone());
        }
        if self.live.fenced && (!self.writes.held.is_empty() || !self.requests.is_empty()) {
            return Err(format!(
                "fenced but holds {} leases and {} requests",
                self.writes.held.len(),
                self.requests.len()
            ));
        }
        for (shard, h) in &self.writes.held {
            if !self.requests.is_empty() && self.requests.contains_key(shard) {
                return Err(format!("{shard:?} held and requested at once"));
            }
            if h.token == FencingToken(0) {
                return Err(format!("{shard:?} held with token 0 (never taken)"));
            }
        }
        for (shard, r) in &self.requests {
            if r.owner == self.me {
                return Err(format!("{shard:?}: hand-off requested from ourselves"));
            }
        }
        for (shard, op) in &self.writes.busy {
            match self.ops.get(op) {
                Some(Op::WriteLease { write, .. }) if write.shard() == shard => {}
                _ => return Err(format!("{shard:?}: busy with unknown op {op:?}")),
            }
        }
        let writes = self
            .ops
            .values()
            .filter(|o| matches!(o, Op::WriteLease { .. }))
            .count();
        if writes != self.writes.busy.len() {
            return Err(format!(
                "{writes} lease writes in flight but {} shards busy",
                self.writes.busy.len()
            ));
        }
        if self.is_shut_down() && !self.writes.held.is_empty() {
            return Err("shut down while holding leases".into());
        }
        if cfg!(debug_assertions) {
            let earliest = self.earliest_retry_at();
            if earliest != self.writes.retry_at {
                return Err(format!(
                    "retry_at {:?} but the earliest retry is {earliest:?}",
                    self.writes.retry_at
                ));
            }
            for (stream, v) in &self.views {
                let mut owners: BTreeMap<Owner, u32> = BTreeMap::new();
                for o in v.rows.values().filter_map(|r| r.owner.as_ref()) {
                    *owners.entry(o.clone()).or_default() += 1;
                }
                if owners != v.owners {
                    return Err(format!(
                        "{stream}: owner counts {:?} != rows' {owners:?}",
                        v.owners
                    ));
                }
            }
        }
        Ok(())
    }

    // ----- outputs -------------------------------------------------------

    /// The next I/O to perform.
    #[must_use]
    pub fn poll_action(&mut self) -> Option<Action> {
        self.actions.pop_front()
    }

    /// The next event for the worker.
    #[must_use]
    pub fn poll_event(&mut self) -> Option<LeaseEvent> {
        self.events.pop_front()
    }

    /// When `handle_timeout` must be called next, and why.
    #[must_use]
    pub fn poll_timeout(&self) -> Option<(Instant, &'static str)> {
        if self.final_beat == FinalBeat::Done {
            return None;
        }
        let mut next: Option<(Instant, &'static str)> = None;
        let mut consider = |at: Instant, why: &'static str| {
            if next.is_none_or(|(n, _)| at < n) {
                next = Some((at, why));
            }
        };
        if self.final_beat == FinalBeat::NotYet && !self.live.superseded {
            match self.live.hb_inflight {
                None => consider(self.live.next_hb_write, "heartbeat write"),
                Some(sent) => consider(sent + self.timing.heartbeat, "heartbeat write hung"),
            }
        }
        if !self.live.hb_read_inflight {
            consider(self.live.next_hb_read, "heartbeat read");
        }
        for v in self.views.values() {
            if !v.reading {
                consider(v.next_read, "lease table read");
            }
        }
        if !self.live.fenced {
            consider(self.fence_deadline(), "self-fence deadline");
            if !self.shutting_down {
                if let Some(at) = self.want_deadline() {
                    consider(at, "unconfirmed hand-off request");
                }
            }
        }
        if let Some(at) = self.writes.retry_at {
            consider(at, "lease write retry");
        }
        next
    }

    // ----- inputs --------------------------------------------------------

    /// Fire whatever is due at `now`. A spurious call is a no-op.
    pub(crate) fn handle_timeout(&mut self, now: Instant, mint: &mut IdMint) {
        self.drive(now, mint);
    }

    /// Consume an answer to one of our operations. Returns false (and does
    /// nothing) for any other input, including answers to ops of others.
    pub(crate) fn handle_input(&mut self, now: Instant, input: &Input, mint: &mut IdMint) -> bool {
        let op = match input {
            Input::Leases { op, .. }
            | Input::LeaseWritten { op, .. }
            | Input::Heartbeats { op, .. }
            | Input::HeartbeatWritten { op, .. }
            | Input::HeartbeatDeleted { op, .. }
            | Input::LeaseDeleted { op, .. } => *op,
            _ => return false,
        };
        let kind_matches = matches!(
            (self.ops.get(&op), input),
            (Some(Op::ReadLeases { .. }), Input::Leases { .. })
                | (Some(Op::WriteLease { .. }), Input::LeaseWritten { .. })
                | (Some(Op::ReadHeartbeats { .. }), Input::Heartbeats { .. })
                | (
                    Some(Op::WriteHeartbeat { .. }),
                    Input::HeartbeatWritten { .. }
                )
                | (
                    Some(Op::DeleteHeartbeat { .. }),
                    Input::HeartbeatDeleted { .. }
                )
                | (Some(Op::DeleteLease { .. }), Input::LeaseDeleted { .. })
        );
        if !kind_matches {
            return false;
        }
        let Some(pending) = self.ops.remove(&op) else {
            return false;
        };
        self.writes.own_sent.remove(&op);
        self.tick(now);
        if self.final_beat == FinalBeat::Done {
            if let Op::WriteLease { write, .. } = &pending {
                self.writes.busy.remove(write.shard());
            }
            return true;
        }
        match (pending, input) {
            (
                Op::ReadLeases {
                    stream,
                    sent,
                    sent_seq,
                },
                Input::Leases { result, .. },
            ) => self.on_leases(now, &stream, sent, sent_seq, result, mint),
            (Op::ReadHeartbeats { sent, sent_seq }, Input::Heartbeats { result, .. }) => {
                self.on_heartbeats(now, sent, sent_seq, result, mint)
            }
            (Op::WriteHeartbeat { sent, alive, wants }, Input::HeartbeatWritten { result, .. }) => {
                self.on_heartbeat_written(now, sent, alive, &wants, result)
            }
            (Op::WriteLease { write, kind, base }, Input::LeaseWritten { result, row, .. }) => {
                self.on_lease_written(now, op, write, kind, *base, *result, row.as_deref(), mint)
            }
            (Op::DeleteLease { shard }, Input::LeaseDeleted { result, .. }) => {
                self.deleting.remove(&shard);
                if result.is_ok() {
                    self.stats.lease_rows_deleted += 1;
                    if let Some(view) = self.views.get_mut(&shard.stream) {
                        view.rows.remove(&shard.shard);
                    }
                }
            }
            (Op::DeleteHeartbeat { owner }, Input::HeartbeatDeleted { result, .. }) => {
                // Deleted, changed (it beat again) or gone: the next read
                // shows which; a failure is tried again after the next one.
                self.live.collecting.remove(&owner);
                if result.is_ok() {
                    self.stats.heartbeats_deleted += 1;
                }
            }
            _ => {}
        }
        self.drive(now, mint);
        true
    }

    /// ListShards result of a stream: remember which shards exist; rows the
    /// table lacks are created after a fresh read (`create_missing`).
    pub(crate) fn handle_shards(
        &mut self,
        now: Instant,
        stream: &StreamId,
        shards: &[ShardInfo],
        mint: &mut IdMint,
    ) {
        self.tick(now);
        let Some(view) = self.views.get_mut(stream) else {
            return;
        };
        view.listed = true;
        view.known = shards
            .iter()
            .map(|s| (s.shard.clone(), s.parents.clone()))
            .collect();
        view.listing = shards
            .iter()
            .map(|s| {
                let open = s.ending_seq.is_none();
                (s.shard.clone(), (open, s.starting_seq.clone()))
            })
            .collect();
        if self.earlier_stream(stream, true) {
            return;
        }
        let Some(view) = self.views.get_mut(stream) else {
            return;
        };
        // The listing is newer than every ChildShards before it.
        view.mentioned.clear();
        // Rows are created from a table view read after this answer (every
        // worker lists the shards: creating from an older view would race
        // them all on the same rows).
        if view.lacks_rows() {
            self.read_now(stream, now);
        }
        self.drive(now, mint);
    }

    /// Child shards learned at a shard end (fast path): create their rows.
    pub(crate) fn handle_child_shards(
        &mut self,
        now: Instant,
        stream: &StreamId,
        children: &[ChildShard],
        mint: &mut IdMint,
    ) {
        self.tick(now);
        let Some(view) = self.views.get_mut(stream) else {
            return;
        };
        for c in children {
            view.known.insert(c.shard.clone(), c.parents.clone());
        }
        for c in children {
            for p in &c.parents {
                if !view.known.contains_key(p) && !view.rows.contains_key(p) {
                    view.mentioned.insert(p.clone());
                }
            }
        }
        if self.shutting_down || self.final_beat != FinalBeat::NotYet {
            return;
        }
        let now_ms = self.unix_ms(now);
        for c in children {
            let Some(view) = self.views.get(stream) else {
                break;
            };
            if !view.rows.contains_key(&c.shard) {
                let row = LeaseRow::new(
                    ShardRef::new(stream.clone(), c.shard.clone()),
                    c.parents.clone(),
                    view.lineage_created_ms(&c.parents, now_ms),
                );
                if !self.room_or_wait(stream) {
                    break;
                }
                self.send_write(mint, LeaseWrite::Create(row), WriteKind::Create, None);
            }
        }
        self.drive(now, mint);
    }

    // ----- commands ------------------------------------------------------

    /// Conditional checkpoint write (owner = me AND token = mine). At most
    /// one per shard in flight; a newer checkpoint asked meanwhile is sent
    /// after it. Ignored when not held, fenced, leaving, or not ahead of
    /// what is stored or on its way.
    pub(crate) fn write_checkpoint(
        &mut self,
        now: Instant,
        shard: &ShardRef,
        cp: Checkpoint,
        mint: &mut IdMint,
    ) {
        self.tick(now);
        if !self.checkpoint_wanted(shard, &cp) {
            return;
        }
        let Some(h) = self.writes.held.get_mut(shard) else {
            return;
        };
        h.cp_queued = Some(cp);
        self.pump_shard(shard, mint);
        self.drive(now, mint);
    }

    /// Acknowledgements that came in after a leaving lease's final
    /// checkpoint was fixed (a transfer or release decided, not yet
    /// applied): the next attempt of the final write carries `cp` (never
    /// moving it back), so a retried hand-off does not hand over records
    /// the application has acknowledged meanwhile. Ignored when the lease
    /// is not leaving or is finishing (`SHARD_END`).
    pub(crate) fn fold_final_checkpoint(&mut self, shard: &ShardRef, cp: Checkpoint) {
        let Some(h) = self.writes.held.get_mut(shard) else {
            return;
        };
        if matches!(
            h.leaving,
            Some((Leaving::Transfer { .. } | Leaving::Release { .. }, _))
        ) && h.cp_queued.as_ref().is_none_or(|q| cp > *q)
        {
            h.cp_queued = Some(cp);
        }
    }

    /// Graceful hand-off after [`LeaseEvent::HandoffRequested`]: Transfer
    /// with the final checkpoint -> `Lost{HandedOff}` (`Lost{Taken}` if
    /// refused); a Release instead (-> `Lost{Released}`) when the taker is
    /// gone by now (shut down or expired), so no row is handed to a dead
    /// worker. Ignored when no hand-off was requested for the lease.
    pub(crate) fn transfer(
        &mut self,
        now: Instant,
        shard: &ShardRef,
        final_cp: Option<Checkpoint>,
        mint: &mut IdMint,
    ) {
        self.tick(now);
        let Some(h) = self.writes.held.get_mut(shard) else {
            return;
        };
        let Some(to) = h.handoff_to.clone() else {
            return;
        };
        if h.leaving.is_none() {
            let taker_gone = self.live.is_expired(&to) || self.live.is_superseded(&to);
            let leaving = if taker_gone {
                Leaving::Release {
                    checkpoint: final_cp,
                    reread: true,
                }
            } else {
                Leaving::Transfer {
                    to,
                    checkpoint: final_cp,
                }
            };
            if let Some(h) = self.writes.held.get_mut(shard) {
                h.leaving = Some((leaving, FinalState::Queued));
            }
        }
        self.pump_shard(shard, mint);
        self.drive(now, mint);
    }

    /// Shard drained: store `SHARD_END` and release in one conditional
    /// write -> `CheckpointWritten{ShardEnd}` then `Lost{ShardEnded}`; the
    /// local view is updated at once so the children are takable.
    pub(crate) fn finish_shard(&mut self, now: Instant, shard: &ShardRef, mint: &mut IdMint) {
        self.tick(now);
        let Some(h) = self.writes.held.get_mut(shard) else {
            return;
        };
        if h.leaving.is_none() {
            h.leaving = Some((Leaving::Finish, FinalState::Queued));
        }
        self.pump_shard(shard, mint);
        self.drive(now, mint);
    }

    /// Give a lease up (fatal shard error, shutdown): Release with the
    /// checkpoint -> `Lost{Released}`.
    pub(crate) fn release(
        &mut self,
        now: Instant,
        shard: &ShardRef,
        cp: Option<Checkpoint>,
        mint: &mut IdMint,
    ) {
        self.tick(now);
        let Some(h) = self.writes.held.get_mut(shard) else {
            return;
        };
        if h.leaving.is_none() {
            h.leaving = Some((
                Leaving::Release {
                    checkpoint: cp,
                    reread: false,
                },
                FinalState::Queued,
            ));
        }
        self.pump_shard(shard, mint);
        self.drive(now, mint);
    }

    /// Do not take or ask for this lease before `until` (after a fatal
    /// shard error, so the worker does not take it straight back).
    pub fn quarantine(&mut self, shard: &ShardRef, until: Instant) {
        let at = self.quarantined.entry(shard.clone()).or_insert(until);
        *at = (*at).max(until);
    }

    /// Stop taking leases and asking for hand-offs; once the worker released
    /// every held lease, write a final heartbeat with `alive = false`.
    pub(crate) fn shutdown(&mut self, now: Instant, mint: &mut IdMint) {
        self.tick(now);
        if !self.shutting_down {
            self.shutting_down = true;
            // A hand-off we asked for may complete now: read those streams
            // once more before the final heartbeat, and release what was
            // transferred to us (kinesin-sim swarm seed 99).
            let mut streams: Vec<StreamId> = self
                .requests
                .keys()
                .chain(self.writes.adoptable.keys())
                .map(|s| s.stream.clone())
                .collect();
            if self.live.fenced {
                // Fenced before: rows may still name us; release them.
                streams.extend(self.views.keys().cloned());
            }
            for stream in streams {
                self.read_once_more(&stream, now);
            }
            self.drop_requests();
            self.writes.adoptable.clear();
        }
        self.drive(now, mint);
    }

    // ----- time and the drive ---------------------------------------------

    fn unix_ms(&self, now: Instant) -> u64 {
        let since = now.saturating_duration_since(self.start).as_millis();
        self.start_unix_ms
            .saturating_add(u64::try_from(since).unwrap_or(u64::MAX))
    }

    /// Send everything due at `now`.
    fn drive(&mut self, now: Instant, mint: &mut IdMint) {
        self.tick(now);
        if self.final_beat == FinalBeat::Done {
            return;
        }
        self.watch_wants(now);
        // Creates, takes and requests that waited for room, then
        // checkpoints that did.
        self.resume_held_back(now, mint);
        self.pump_waiting(mint);
        // Final writes that failed without being applied.
        if self.writes.retry_at.is_some_and(|at| at <= now) {
            let retries: Vec<ShardRef> = self
                .writes
                .held
                .iter()
                .filter(
                    |(_, h)| matches!(h.leaving, Some((_, FinalState::RetryAt(at))) if at <= now),
                )
                .map(|(s, _)| s.clone())
                .collect();
            for shard in &retries {
                if let Some(h) = self.writes.held.get_mut(shard) {
                    if let Some((_, st)) = h.leaving.as_mut() {
                        *st = FinalState::Queued;
                    }
                }
            }
            self.recompute_retry_at();
            for shard in retries {
                self.pump_shard(&shard, mint);
            }
        }
        // Final writes of leases lost to a fence on the way out.
        if !self.writes.departing.is_empty() {
            let ready: Vec<ShardRef> = self
                .writes
                .departing
                .keys()
                .filter(|s| !self.writes.busy.contains_key(*s))
                .cloned()
                .collect();
            for shard in ready {
                if let Some(write) = self.writes.departing.remove(&shard) {
                    self.send_write(mint, write, WriteKind::Orphan, None);
                }
            }
        }
        // Heartbeat write.
        let hung = self
            .live
            .hb_inflight
            .is_some_and(|sent| now >= sent + self.timing.heartbeat);
        // Superseded: never write over the later process's row, not even
        // the final (not alive) beat, which would make it look dead.
        if self.live.superseded && self.shutting_down && self.final_beat == FinalBeat::NotYet {
            self.final_beat = FinalBeat::Done;
        }
        if self.final_beat == FinalBeat::NotYet
            && !self.live.superseded
            && (self.live.hb_inflight.is_none() || hung)
        {
            if self.shutting_down
                && self.writes.held.is_empty()
                && self.writes.busy.is_empty()
                && self.final_reads.is_empty()
                && self.writes.departing.is_empty()
            {
                self.send_heartbeat(now, mint, false);
                self.final_beat = FinalBeat::Sent;
            } else if self.live.hb_asap || now >= self.live.next_hb_write {
                self.send_heartbeat(now, mint, true);
            }
        }
        // Heartbeat read.
        if !self.live.hb_read_inflight && now >= self.live.next_hb_read {
            let op = mint.op();
            self.seq += 1;
            let sent_seq = self.seq;
            self.live.hb_read_inflight = true;
            self.stats.heartbeat_reads += 1;
            self.ops.insert(
                op,
                Op::ReadHeartbeats {
                    sent: now,
                    sent_seq,
                },
            );
            self.actions.push_back(Action::ReadHeartbeats { op });
        }
        // Lease table reads.
        let due: Vec<StreamId> = self
            .views
            .iter()
            .filter(|(_, v)| !v.reading && now >= v.next_read)
            .map(|(s, _)| s.clone())
            .collect();
        for stream in due {
            let op = mint.op();
            self.seq += 1;
            let sent_seq = self.seq;
            if let Some(v) = self.views.get_mut(&stream) {
                v.reading = true;
            }
            self.stats.lease_reads += 1;
            self.ops.insert(
                op,
                Op::ReadLeases {
                    stream: stream.clone(),
                    sent: now,
                    sent_seq,
                },
            );
            self.actions.push_back(Action::ReadLeases { op, stream });
        }
    }

    // ----- balancing -------------------------------------------------------

    /// The balancing pass after a fresh read of `stream`: the plan of
    /// [`balance::plan`], executed in its order (takes, the confirming
    /// heartbeat read, then hand-off requests).
    fn balance(&mut self, now: Instant, stream: &StreamId, mint: &mut IdMint) {
        if self.live.fenced
            || self.shutting_down
            || self.live.last_renew_sent.is_none()
            || self.live.last_hb_read_sent.is_none()
        {
            return;
        }
        self.quarantined.retain(|_, until| *until > now);
        let taking = self
            .ops
            .values()
            .filter(|o| {
                matches!(
                    o,
                    Op::WriteLease {
                        kind: WriteKind::Take { forced: false },
                        ..
                    }
                )
            })
            .count();
        let staying = self
            .writes
            .held
            .values()
            .filter(|h| h.leaving.is_none())
            .count();
        let blocked = |s: &ShardRef| {
            self.quarantined.contains_key(s)
                || self.writes.held.contains_key(s)
                || self.writes.busy.contains_key(s)
                || self.writes.adoptable.contains_key(s)
                || self.writes.refused.contains_key(s)
        };
        let load = Load {
            staying,
            taking,
            requests: &self.requests,
            blocked: &blocked,
            explicit: &self.explicit,
        };
        let plan = balance::plan(&self.views, stream, &self.live, &load);
        for take in plan.takes {
            match take {
                Take::Forced(shard) => {
                    self.force_take(&shard, mint);
                }
                Take::Free(row) => {
                    if !self.room_or_wait(stream) {
                        continue;
                    }
                    let write = LeaseWrite::Take {
                        shard: row.shard.clone(),
                        expect_owner: row.owner.clone(),
                        expect_token: row.token,
                        to: self.me.clone(),
                    };
                    let sent =
                        self.send_write(mint, write, WriteKind::Take { forced: false }, Some(row));
                    debug_assert!(sent, "a planned take is on a shard with no write in flight");
                }
            }
        }
        if plan.confirm {
            if let Some(v) = self.views.get_mut(stream) {
                v.confirm = true;
            }
            self.live.next_hb_read = self.live.next_hb_read.min(now);
        }
        if plan.orphans_left {
            self.read_soon(stream, now);
            if let Some(at) = plan.stale_at {
                self.read_at(stream, at.max(now));
            }
        }
        for ask in plan.asks {
            match ask {
                Ask::Stands { row, owner } => {
                    self.requests.insert(
                        row.shard.clone(),
                        Request {
                            owner,
                            token: row.token,
                            state: RequestState::Waiting { since: now },
                            confirmed: true,
                            published: None,
                        },
                    );
                    self.live.hb_asap = true;
                }
                Ask::Request { row, owner } => {
                    if !self.room_or_wait(stream) {
                        continue;
                    }
                    let write = LeaseWrite::RequestHandoff {
                        shard: row.shard.clone(),
                        owner: owner.clone(),
                        token: row.token,
                        pending: self.me.clone(),
                    };
                    let shard = row.shard.clone();
                    let token = row.token;
                    if self.send_write(mint, write, WriteKind::Request, Some(row)) {
                        self.requests.insert(
                            shard,
                            Request {
                                owner,
                                token,
                                state: RequestState::Sending,
                                confirmed: false,
                                published: None,
                            },
                        );
                    }
                }
            }
        }
    }

    // ----- hand-off requests (taker side) ---------------------------------

    fn drop_request(&mut self, shard: &ShardRef) {
        if self.requests.remove(shard).is_some_and(|r| r.confirmed) {
            self.live.hb_asap = true;
        }
    }

    fn drop_requests(&mut self) {
        if self.requests.values().any(|r| r.confirmed) {
            self.live.hb_asap = true;
        }
        self.requests.clear();
    }
}

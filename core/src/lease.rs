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
//! Rules encoded (SPEC 4 and 5):
//! - Every lease row carries `owner` and a fencing `token` bumped on every
//!   change of owner; every write on a held lease is conditional on
//!   `(owner = me, token = mine)`, a take on the `(owner, token)` observed.
//! - Liveness costs O(workers): one heartbeat write per worker every
//!   `heartbeat_interval`, none per lease. An owner is expired when, at a
//!   successful (consistent) heartbeat read, its beat has not changed for
//!   `failover_time` on the observer's clock. The judging instant is the
//!   read's *send* instant and a beat counts as seen from the *reply* of the
//!   first read that showed it, so a read delayed in flight can only make an
//!   owner look younger, never older. A missing row, or a row of an
//!   earlier incarnation, counts from the reply of the first read that
//!   showed it missing; `alive = false`, or a row of a later incarnation of
//!   the same worker id (the process restarted), is expired at once. Wall clocks are never
//!   compared, and a worker that has not read heartbeats judges nobody
//!   expired. A verdict of heartbeat read `r` holds only for leases that
//!   existed before `r` (the owner may have come back and taken leases
//!   afresh since), so a dead owner's row is taken only when `r` was sent
//!   after the table view that shows the row; otherwise one more heartbeat
//!   read confirms first.
//! - Self-fence: a worker whose last successful heartbeat write was *sent*
//!   at `s` stops reading and checkpointing at `s + failover_time -
//!   self_fence_margin`, before any observer can judge it expired; it takes
//!   leases afresh (token + 1) once a heartbeat write succeeds again.
//! - Balancing: `target = ceil(active leases / live workers)`; free and
//!   expired leases are taken first, then the whole remaining deficit is
//!   asked from the most loaded live workers in the same pass
//!   (`pending_owner`), announced in the taker's heartbeat `wants`. The owner
//!   transfers with its final checkpoint; past `2 * handoff_timeout` the
//!   taker takes by force, conditional on the token it observed.
//! - A closed parent is read to its end (`SHARD_END`) before any child is
//!   taken; a parent that neither ListShards nor the table knows any more
//!   (trimmed) counts as ended. `SHARD_END` and the release are one
//!   conditional write, so a drained shard is never left ended but owned.
//! - Ambiguous answers (applied or not) are resolved by reading the row:
//!   a take whose row names us is adopted, a final write whose row moved on
//!   is done; failed writes that were surely not applied are retried. A
//!   write refused by its condition is not sent again on a read sent before
//!   the refusal (that read still shows the old row; a refused write costs
//!   a write unit all the same).
//! - Cost of creating rows: a row is created only when a table view read
//!   after ListShards lacks it, by one designated creator (the live workers
//!   in owner order, a stable hash of the shard picks one); the others
//!   create it only if a view two heartbeat-read intervals later still
//!   lacks it. Free rows are taken in the same spread, so a fleet starting
//!   together neither races on creates nor on takes.
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

use std::collections::{BTreeMap, VecDeque};
use std::time::{Duration, Instant};

use crate::config::Config;
use crate::ids::{FencingToken, IdMint, OpId, Owner, ShardId, ShardRef, StreamId};
use crate::io::{Action, ChildShard, ErrorClass, Input, LostReason, ShardInfo};
use crate::sequence::Checkpoint;
use crate::table::{HeartbeatRow, LeaseRow, LeaseWrite};

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
    /// A taker asked for this shard: the worker stops reading, waits for
    /// in-flight acks (`handoff_timeout`), then calls `transfer`.
    HandoffRequested {
        /// Which shard.
        shard: ShardRef,
        /// The taker.
        to: Owner,
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
}

/// The timing knobs of [`Config`] the protocol uses.
#[derive(Clone, Copy, Debug)]
struct Timing {
    failover: Duration,
    heartbeat: Duration,
    heartbeat_read: Duration,
    fence_after: Duration,
    rebalance: Duration,
    handoff: Duration,
}

impl Timing {
    /// Wait before retrying a write or read that failed without being
    /// applied.
    fn retry(&self) -> Duration {
        self.heartbeat_read.min(self.heartbeat)
    }
}

/// How a held lease is being given up.
#[derive(Clone, Debug, PartialEq, Eq)]
enum Leaving {
    /// Graceful hand-off to the pending owner.
    Transfer {
        to: Owner,
        checkpoint: Option<Checkpoint>,
    },
    /// Release (fatal shard error, shutdown, or a hand-off whose taker is
    /// gone: then `reread`, so the free row is balanced again at once).
    Release {
        checkpoint: Option<Checkpoint>,
        reread: bool,
    },
    /// Shard drained: release with `SHARD_END` in one conditional write.
    Finish,
}

/// Where the final write of a leaving lease is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum FinalState {
    /// To be sent as soon as no other write of the lease is in flight.
    Queued,
    /// In flight.
    Sent,
    /// Failed without being applied; sent again at this instant.
    RetryAt(Instant),
    /// Answered `Ambiguous`: the next fresh table read decides.
    Resolving,
}

/// A lease this worker holds (Acquired emitted, Lost not yet).
#[derive(Clone, Debug)]
struct Held {
    token: FencingToken,
    /// Set once `HandoffRequested` was emitted: the taker.
    handoff_to: Option<Owner>,
    /// Highest checkpoint known stored.
    confirmed: Option<Checkpoint>,
    /// Checkpoint write in flight.
    cp_sent: Option<Checkpoint>,
    /// Newest checkpoint asked while one was in flight.
    cp_queued: Option<Checkpoint>,
    /// Set when the lease is being given up.
    leaving: Option<(Leaving, FinalState)>,
}

/// Where a hand-off request of ours is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum RequestState {
    /// RequestHandoff in flight.
    Sending,
    /// Waiting for the owner's transfer; forced after `2 * handoff` from
    /// `since`.
    Waiting { since: Instant },
    /// Forced take in flight.
    Forcing { since: Instant },
}

/// A graceful hand-off this worker asked for (taker side).
#[derive(Clone, Debug)]
struct Request {
    /// The owner and token observed when asking.
    owner: Owner,
    token: FencingToken,
    state: RequestState,
    /// The table (or the write's answer) shows `pending_owner = me`: listed
    /// in our heartbeat's `wants`.
    confirmed: bool,
}

/// What a lease write was for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum WriteKind {
    Create,
    Take {
        forced: bool,
    },
    Request,
    Checkpoint,
    Final,
    /// Release of a row that names us but that we do not hold.
    Orphan,
}

/// An operation in flight.
#[derive(Clone, Debug)]
enum Op {
    ReadLeases {
        stream: StreamId,
        sent_seq: u64,
    },
    ReadHeartbeats {
        sent: Instant,
        sent_seq: u64,
    },
    WriteHeartbeat {
        sent: Instant,
        alive: bool,
    },
    WriteLease {
        write: LeaseWrite,
        kind: WriteKind,
        /// The row the write was computed from (our view at send time).
        base: Box<Option<LeaseRow>>,
    },
}

/// What we know of one owner's heartbeat.
#[derive(Clone, Debug)]
struct Observed {
    /// Last beat seen (`None`: the row was missing or named another
    /// incarnation at the last read).
    beat: Option<u64>,
    /// Reply instant of the first read that showed this state.
    since: Instant,
    /// The row said `alive = false`.
    dead: bool,
}

/// This worker's view of one stream's lease rows.
#[derive(Clone, Debug)]
struct StreamView {
    rows: BTreeMap<ShardId, LeaseRow>,
    /// How many of `rows` each owner holds (kept with `rows` by
    /// [`StreamView::set_rows`] and [`StreamView::set_row`]): every
    /// heartbeat read judges these owners, without walking the rows.
    owners: BTreeMap<Owner, u32>,
    /// A read succeeded at least once.
    have_view: bool,
    /// A ReadLeases is in flight.
    reading: bool,
    /// Read again as soon as the one in flight is answered.
    read_again: bool,
    next_read: Instant,
    /// `seq` when the last successful read was answered.
    reply_seq: u64,
    /// Balance again after the next heartbeat read: this view showed rows
    /// of owners judged expired by a heartbeat read older than the view.
    confirm: bool,
    /// ListShards answered at least once.
    listed: bool,
    /// Shards known to exist (last ListShards plus children learned since),
    /// with their parents.
    known: BTreeMap<ShardId, Vec<ShardId>>,
    /// Known shards the view lacked, left to their designated creator,
    /// with when: created by us if a view two heartbeat-read intervals
    /// later still lacks them (the designated creator may be dead).
    deferred: BTreeMap<ShardId, Instant>,
}

impl StreamView {
    /// Some shard known to exist has no row in this view.
    fn lacks_rows(&self) -> bool {
        self.known.keys().any(|id| !self.rows.contains_key(id))
    }

    fn set_rows(&mut self, rows: BTreeMap<ShardId, LeaseRow>) {
        self.owners.clear();
        for o in rows.values().filter_map(|r| r.owner.as_ref()) {
            match self.owners.get_mut(o) {
                Some(n) => *n += 1,
                None => {
                    self.owners.insert(o.clone(), 1);
                }
            }
        }
        self.rows = rows;
    }

    fn set_row(&mut self, id: ShardId, row: LeaseRow) {
        if let Some(o) = row.owner.as_ref() {
            *self.owners.entry(o.clone()).or_default() += 1;
        }
        let old = self.rows.insert(id, row);
        if let Some(o) = old.and_then(|r| r.owner) {
            if let Some(n) = self.owners.get_mut(&o) {
                *n -= 1;
                if *n == 0 {
                    self.owners.remove(&o);
                }
            }
        }
    }
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
    timing: Timing,
    start: Instant,
    start_unix_ms: u64,
    /// Logical clock ordering table reads against write answers.
    seq: u64,

    beat: u64,
    hb_inflight: bool,
    hb_asap: bool,
    next_hb_write: Instant,
    last_renew_sent: Option<Instant>,
    fenced: bool,

    hb_read_inflight: bool,
    /// Successful heartbeat reads so far (saturating).
    hb_reads_ok: u32,
    next_hb_read: Instant,
    last_hb_read_sent: Option<Instant>,
    /// `seq` when the last successful heartbeat read was sent.
    last_hb_read_seq: u64,
    observed: BTreeMap<Owner, Observed>,

    views: BTreeMap<StreamId, StreamView>,
    held: BTreeMap<ShardRef, Held>,
    requests: BTreeMap<ShardRef, Request>,
    /// Takes answered `Ambiguous`: the token the row has if it applied.
    adoptable: BTreeMap<ShardRef, FencingToken>,
    /// The earliest `FinalState::RetryAt` among `held` (kept exact, so the
    /// drive and `poll_timeout` need not walk every held lease).
    retry_at: Option<Instant>,
    quarantined: BTreeMap<ShardRef, Instant>,

    ops: BTreeMap<OpId, Op>,
    /// The one lease write in flight per shard.
    busy: BTreeMap<ShardRef, OpId>,
    /// Shards with a write answered after the oldest pending table read was
    /// sent (value: `seq` of the answer): such a read is stale for them.
    changed: BTreeMap<ShardRef, u64>,
    /// Shards whose last write was refused by its condition (value: `seq`
    /// of the answer): the row is not what our view says, and a read sent
    /// before the refusal may still show the old row. Nothing is written
    /// on them again before a read sent after the refusal (a refused write
    /// costs a write unit all the same).
    refused: BTreeMap<ShardRef, u64>,

    shutting_down: bool,
    /// At shutdown: streams whose lease rows must be read once more (a read
    /// sent after `seq` = the value, answered or failed) before the final
    /// heartbeat, because a hand-off we asked for may have completed: a
    /// row transferred to us is then released instead of being left to our
    /// dead incarnation.
    final_reads: BTreeMap<StreamId, u64>,
    /// Fenced while shutting down: final writes of the leases we held,
    /// sent (once each, when no other write of the lease is in flight)
    /// before the final heartbeat.
    departing: BTreeMap<ShardRef, LeaseWrite>,
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
            rebalance: config.rebalance_period,
            handoff: config.handoff_timeout,
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
                        deferred: BTreeMap::new(),
                    },
                )
            })
            .collect();
        LeaseManager {
            me: config.owner.clone(),
            timing,
            start: now,
            start_unix_ms: unix_ms,
            seq: 0,
            beat: 0,
            hb_inflight: false,
            hb_asap: false,
            next_hb_write: now,
            last_renew_sent: None,
            fenced: false,
            hb_read_inflight: false,
            hb_reads_ok: 0,
            next_hb_read: now,
            last_hb_read_sent: None,
            last_hb_read_seq: 0,
            observed: BTreeMap::new(),
            views,
            held: BTreeMap::new(),
            requests: BTreeMap::new(),
            adoptable: BTreeMap::new(),
            retry_at: None,
            quarantined: BTreeMap::new(),
            ops: BTreeMap::new(),
            busy: BTreeMap::new(),
            changed: BTreeMap::new(),
            refused: BTreeMap::new(),
            shutting_down: false,
            final_reads: BTreeMap::new(),
            departing: BTreeMap::new(),
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
        self.held.iter().map(|(s, h)| (s, h.token))
    }

    /// The token of a held lease.
    pub fn token(&self, shard: &ShardRef) -> Option<FencingToken> {
        self.held.get(shard).map(|h| h.token)
    }

    /// True while the worker could not renew its heartbeat in time: it holds
    /// nothing and takes nothing.
    pub fn is_fenced(&self) -> bool {
        self.fenced
    }

    /// Live workers as last observed, this one included.
    pub fn live_workers(&self) -> usize {
        1 + self
            .observed
            .keys()
            .filter(|o| **o != self.me && self.is_live(o))
            .count()
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
        if self.fenced && (!self.held.is_empty() || !self.requests.is_empty()) {
            return Err(format!(
                "fenced but holds {} leases and {} requests",
                self.held.len(),
                self.requests.len()
            ));
        }
        for (shard, h) in &self.held {
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
        for (shard, op) in &self.busy {
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
        if writes != self.busy.len() {
            return Err(format!(
                "{writes} lease writes in flight but {} shards busy",
                self.busy.len()
            ));
        }
        if self.is_shut_down() && !self.held.is_empty() {
            return Err("shut down while holding leases".into());
        }
        if cfg!(debug_assertions) {
            let earliest = self
                .held
                .values()
                .filter_map(|h| match h.leaving {
                    Some((_, FinalState::RetryAt(at))) => Some(at),
                    _ => None,
                })
                .min();
            if earliest != self.retry_at {
                return Err(format!(
                    "retry_at {:?} but the earliest retry is {earliest:?}",
                    self.retry_at
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
        if !self.hb_inflight && self.final_beat == FinalBeat::NotYet {
            consider(self.next_hb_write, "heartbeat write");
        }
        if !self.hb_read_inflight {
            consider(self.next_hb_read, "heartbeat read");
        }
        for v in self.views.values() {
            if !v.reading {
                consider(v.next_read, "lease table read");
            }
        }
        if !self.fenced {
            consider(self.fence_deadline(), "self-fence deadline");
        }
        if let Some(at) = self.retry_at {
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
            | Input::HeartbeatWritten { op, .. } => *op,
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
        );
        if !kind_matches {
            return false;
        }
        let Some(pending) = self.ops.remove(&op) else {
            return false;
        };
        self.tick(now);
        if self.final_beat == FinalBeat::Done {
            if let Op::WriteLease { write, .. } = &pending {
                self.busy.remove(write.shard());
            }
            return true;
        }
        match (pending, input) {
            (Op::ReadLeases { stream, sent_seq }, Input::Leases { result, .. }) => {
                self.on_leases(now, &stream, sent_seq, result, mint)
            }
            (Op::ReadHeartbeats { sent, sent_seq }, Input::Heartbeats { result, .. }) => {
                self.on_heartbeats(now, sent, sent_seq, result, mint)
            }
            (Op::WriteHeartbeat { sent, alive }, Input::HeartbeatWritten { result, .. }) => {
                self.on_heartbeat_written(now, sent, alive, result)
            }
            (Op::WriteLease { write, kind, base }, Input::LeaseWritten { result, .. }) => {
                self.on_lease_written(now, op, write, kind, *base, *result, mint)
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
        if self.shutting_down || self.final_beat != FinalBeat::NotYet {
            return;
        }
        for c in children {
            let has_row = self
                .views
                .get(stream)
                .is_some_and(|v| v.rows.contains_key(&c.shard));
            if !has_row {
                let row = LeaseRow::new(
                    ShardRef::new(stream.clone(), c.shard.clone()),
                    c.parents.clone(),
                    self.unix_ms(now),
                );
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
        let Some(h) = self.held.get_mut(shard) else {
            return;
        };
        if h.leaving.is_some() {
            return;
        }
        let newest = [&h.confirmed, &h.cp_sent, &h.cp_queued]
            .into_iter()
            .flatten()
            .max();
        if newest.is_some_and(|n| cp <= *n) {
            return;
        }
        h.cp_queued = Some(cp);
        self.pump_shard(shard, mint);
        self.drive(now, mint);
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
        let Some(h) = self.held.get_mut(shard) else {
            return;
        };
        let Some(to) = h.handoff_to.clone() else {
            return;
        };
        if h.leaving.is_none() {
            let taker_gone = self.is_expired(&to);
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
            if let Some(h) = self.held.get_mut(shard) {
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
        let Some(h) = self.held.get_mut(shard) else {
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
        let Some(h) = self.held.get_mut(shard) else {
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
                .chain(self.adoptable.keys())
                .map(|s| s.stream.clone())
                .collect();
            if self.fenced {
                // Fenced before: rows may still name us; release them.
                streams.extend(self.views.keys().cloned());
            }
            for stream in streams {
                self.read_once_more(&stream, now);
            }
            self.drop_requests();
            self.adoptable.clear();
        }
        self.drive(now, mint);
    }

    // ----- time ----------------------------------------------------------

    fn unix_ms(&self, now: Instant) -> u64 {
        let since = now.saturating_duration_since(self.start).as_millis();
        self.start_unix_ms
            .saturating_add(u64::try_from(since).unwrap_or(u64::MAX))
    }

    fn fence_deadline(&self) -> Instant {
        self.last_renew_sent.unwrap_or(self.start) + self.timing.fence_after
    }

    /// Self-fence when the deadline passed; runs first in every entry point.
    fn tick(&mut self, now: Instant) {
        if !self.fenced && now >= self.fence_deadline() {
            self.fenced = true;
            for (shard, mut h) in std::mem::take(&mut self.held) {
                if self.shutting_down {
                    // Fenced on the way out: nothing is read or delivered
                    // any more, but the rows are still ours in the table.
                    // Their final writes (conditional on our token, so
                    // harmless if someone took them meanwhile) go out
                    // before the final heartbeat instead of leaving them to
                    // expire.
                    let write = match h.leaving {
                        Some((_, FinalState::Sent)) => None,
                        Some(_) => Self::final_write(&self.me, &shard, &mut h),
                        None => Some(LeaseWrite::Release {
                            shard: shard.clone(),
                            owner: self.me.clone(),
                            token: h.token,
                            checkpoint: None,
                        }),
                    };
                    if let Some(write) = write {
                        self.departing.insert(shard.clone(), write);
                    }
                }
                self.events.push_back(LeaseEvent::Lost {
                    shard,
                    token: h.token,
                    reason: LostReason::SelfFenced,
                });
            }
            self.retry_at = None;
            self.drop_requests();
            self.adoptable.clear();
        }
    }

    /// Send everything due at `now`.
    fn drive(&mut self, now: Instant, mint: &mut IdMint) {
        self.tick(now);
        if self.final_beat == FinalBeat::Done {
            return;
        }
        // Final writes that failed without being applied.
        if self.retry_at.is_some_and(|at| at <= now) {
            let retries: Vec<ShardRef> = self
                .held
                .iter()
                .filter(
                    |(_, h)| matches!(h.leaving, Some((_, FinalState::RetryAt(at))) if at <= now),
                )
                .map(|(s, _)| s.clone())
                .collect();
            for shard in &retries {
                if let Some(h) = self.held.get_mut(shard) {
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
        if !self.departing.is_empty() {
            let ready: Vec<ShardRef> = self
                .departing
                .keys()
                .filter(|s| !self.busy.contains_key(*s))
                .cloned()
                .collect();
            for shard in ready {
                if let Some(write) = self.departing.remove(&shard) {
                    self.send_write(mint, write, WriteKind::Orphan, None);
                }
            }
        }
        // Heartbeat write.
        if self.final_beat == FinalBeat::NotYet && !self.hb_inflight {
            if self.shutting_down
                && self.held.is_empty()
                && self.busy.is_empty()
                && self.final_reads.is_empty()
                && self.departing.is_empty()
            {
                self.send_heartbeat(now, mint, false);
                self.final_beat = FinalBeat::Sent;
            } else if self.hb_asap || now >= self.next_hb_write {
                self.send_heartbeat(now, mint, true);
            }
        }
        // Heartbeat read.
        if !self.hb_read_inflight && now >= self.next_hb_read {
            let op = mint.op();
            self.seq += 1;
            let sent_seq = self.seq;
            self.hb_read_inflight = true;
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
                    sent_seq,
                },
            );
            self.actions.push_back(Action::ReadLeases { op, stream });
        }
    }

    // ----- heartbeats ----------------------------------------------------

    fn wants(&self) -> Vec<ShardRef> {
        self.requests
            .iter()
            .filter(|(_, r)| r.confirmed)
            .map(|(s, _)| s.clone())
            .collect()
    }

    fn send_heartbeat(&mut self, now: Instant, mint: &mut IdMint, alive: bool) {
        self.beat += 1;
        let row = HeartbeatRow {
            owner: self.me.clone(),
            beat: self.beat,
            held: u32::try_from(self.held.len()).unwrap_or(u32::MAX),
            wants: if alive { self.wants() } else { Vec::new() },
            alive,
        };
        let op = mint.op();
        self.hb_inflight = true;
        self.hb_asap = false;
        self.stats.heartbeat_writes += 1;
        self.ops.insert(op, Op::WriteHeartbeat { sent: now, alive });
        self.actions.push_back(Action::WriteHeartbeat { op, row });
    }

    fn on_heartbeat_written(
        &mut self,
        now: Instant,
        sent: Instant,
        alive: bool,
        result: &Result<(), ErrorClass>,
    ) {
        self.hb_inflight = false;
        if !alive {
            // The final heartbeat: answered, whatever the answer.
            self.final_beat = FinalBeat::Done;
            return;
        }
        match result {
            Ok(()) => {
                let first_renewal = self.last_renew_sent.is_none();
                let renewed = self.last_renew_sent.map_or(sent, |l| l.max(sent));
                self.last_renew_sent = Some(renewed);
                if first_renewal && self.last_hb_read_sent.is_some() {
                    // The first heartbeat read (and its balancing reads)
                    // came back before this first renewal, so that pass
                    // was skipped: balance now, not a rebalance period
                    // later.
                    self.read_all_now(now);
                }
                if self.fenced && now < self.fence_deadline() {
                    // Renewed again: take leases afresh (token + 1).
                    self.fenced = false;
                    self.read_all_now(now);
                }
                self.next_hb_write = sent + self.timing.heartbeat;
            }
            Err(_) => {
                // Ambiguous or failed: does not renew; try again soon.
                self.next_hb_write = now + self.timing.retry();
            }
        }
    }

    fn on_heartbeats(
        &mut self,
        now: Instant,
        sent: Instant,
        sent_seq: u64,
        result: &Result<Vec<HeartbeatRow>, ErrorClass>,
        mint: &mut IdMint,
    ) {
        self.hb_read_inflight = false;
        self.next_hb_read = sent + self.timing.heartbeat_read;
        let Ok(rows) = result else {
            return;
        };
        self.hb_reads_ok = self.hb_reads_ok.saturating_add(1);
        if self.hb_reads_ok == 2 {
            // Creators can be designated from now on (see `creator_ring`):
            // views that lack rows are read again to create them.
            let lacking: Vec<StreamId> = self
                .views
                .iter()
                .filter(|(_, v)| v.lacks_rows())
                .map(|(s, _)| s.clone())
                .collect();
            for stream in lacking {
                self.read_now(&stream, now);
            }
        }
        let first_read = self.last_hb_read_sent.is_none();
        let judged_before = self.last_hb_read_sent;
        let failover = self.timing.failover;
        // The store keys rows by worker id: one row (one incarnation) each.
        let mut by_owner: BTreeMap<&Owner, &HeartbeatRow> = BTreeMap::new();
        for row in rows {
            by_owner.insert(&row.owner, row);
        }
        // A row of a *later* incarnation of the same worker id means that
        // process restarted: the earlier incarnation is dead (its memory is
        // gone), so its leases are taken at once instead of F later.
        let restarted = |owner: &Owner| {
            rows.iter()
                .any(|r| r.owner.worker == owner.worker && r.owner.incarnation > owner.incarnation)
        };
        // Owners judged expired by this read and not by the previous one.
        let mut turned: Vec<Owner> = Vec::new();
        // Owners known already: update in place.
        for (owner, ob) in self.observed.iter_mut() {
            let was = Self::expired_at(ob, judged_before, failover);
            *ob = match (by_owner.get(owner), &*ob) {
                (Some(row), p) if p.beat == Some(row.beat) => Observed {
                    dead: p.dead || !row.alive,
                    ..p.clone()
                },
                (Some(row), _) => Observed {
                    beat: Some(row.beat),
                    since: now,
                    dead: !row.alive,
                },
                (None, p) if p.beat.is_none() => Observed {
                    dead: p.dead || restarted(owner),
                    ..p.clone()
                },
                (None, _) => Observed {
                    beat: None,
                    since: now,
                    dead: restarted(owner),
                },
            };
            if !was && Self::expired_at(ob, Some(sent), failover) {
                turned.push(owner.clone());
            }
        }
        // Owners seen for the first time: in a heartbeat row, or only in a
        // lease row (no heartbeat row: counts from now).
        let mut fresh: Vec<(Owner, Observed)> = Vec::new();
        for (owner, row) in &by_owner {
            if **owner != self.me && !self.observed.contains_key(*owner) {
                let ob = Observed {
                    beat: Some(row.beat),
                    since: now,
                    dead: !row.alive,
                };
                fresh.push(((*owner).clone(), ob));
            }
        }
        for v in self.views.values() {
            for owner in v.owners.keys() {
                if *owner != self.me
                    && !self.observed.contains_key(owner)
                    && !by_owner.contains_key(owner)
                    && !fresh.iter().any(|(o, _)| o == owner)
                {
                    let ob = Observed {
                        beat: None,
                        since: now,
                        dead: restarted(owner),
                    };
                    fresh.push((owner.clone(), ob));
                }
            }
        }
        for (owner, ob) in fresh {
            if Self::expired_at(&ob, Some(sent), failover) {
                turned.push(owner.clone());
            }
            self.observed.insert(owner, ob);
        }
        // Forget owners nobody mentions any more.
        let views = &self.views;
        self.observed
            .retain(|o, ob| ob.beat.is_some() || views.values().any(|v| v.owners.contains_key(o)));
        self.last_hb_read_sent = Some(sent);
        self.last_hb_read_seq = sent_seq;

        // Owner side of hand-offs: a live taker lists one of our leases.
        if !self.fenced && !self.shutting_down {
            for (owner, row) in &by_owner {
                if **owner == self.me || !row.alive || !self.is_live(owner) {
                    continue;
                }
                for shard in &row.wants {
                    self.request_seen(shard, owner);
                }
            }
        }
        let newly_expired = turned.iter().any(|o| self.observed.contains_key(o));
        if first_read || newly_expired {
            // Balance now (first read), or take the dead owner's leases
            // within about one read of its expiry.
            self.read_all_now(now);
        }
        // Views that showed expired owners, now confirmed by a read sent
        // after them.
        let confirm: Vec<StreamId> = self
            .views
            .iter()
            .filter(|(_, v)| v.confirm)
            .map(|(s, _)| s.clone())
            .collect();
        for stream in confirm {
            if let Some(v) = self.views.get_mut(&stream) {
                v.confirm = false;
            }
            self.balance(now, &stream, mint);
        }
    }

    /// A live taker asked for `shard`: tell the worker once.
    fn request_seen(&mut self, shard: &ShardRef, taker: &Owner) {
        let Some(h) = self.held.get_mut(shard) else {
            return;
        };
        if h.handoff_to.is_some() || h.leaving.is_some() {
            return;
        }
        h.handoff_to = Some(taker.clone());
        self.events.push_back(LeaseEvent::HandoffRequested {
            shard: shard.clone(),
            to: taker.clone(),
        });
    }

    fn is_expired(&self, owner: &Owner) -> bool {
        if *owner == self.me {
            return false;
        }
        self.observed
            .get(owner)
            .is_some_and(|ob| Self::expired_at(ob, self.last_hb_read_sent, self.timing.failover))
    }

    /// An observation judged at heartbeat read `judged` (sent then): dead,
    /// or its beat unchanged for `failover`. Nobody is expired before a
    /// heartbeat read.
    fn expired_at(ob: &Observed, judged: Option<Instant>, failover: Duration) -> bool {
        judged.is_some_and(|r| {
            ob.dead
                || r.checked_duration_since(ob.since)
                    .is_some_and(|d| d >= failover)
        })
    }

    fn is_live(&self, owner: &Owner) -> bool {
        *owner == self.me
            || self
                .observed
                .get(owner)
                .is_some_and(|ob| ob.beat.is_some() && !ob.dead && !self.is_expired(owner))
    }

    // ----- table view ----------------------------------------------------

    fn read_all_now(&mut self, now: Instant) {
        let streams: Vec<StreamId> = self.views.keys().cloned().collect();
        for s in streams {
            self.read_now(&s, now);
        }
    }

    fn read_now(&mut self, stream: &StreamId, now: Instant) {
        if let Some(v) = self.views.get_mut(stream) {
            if v.reading {
                v.read_again = true;
            } else {
                v.next_read = v.next_read.min(now);
            }
        }
    }

    /// Read this stream at heartbeat-read cadence (outstanding request or
    /// unresolved write).
    fn read_soon(&mut self, stream: &StreamId, now: Instant) {
        let at = now + self.timing.heartbeat_read;
        if let Some(v) = self.views.get_mut(stream) {
            v.next_read = v.next_read.min(at);
        }
    }

    /// Shutting down: hold the final heartbeat until a read of `stream`
    /// sent from now on is answered (or fails).
    fn read_once_more(&mut self, stream: &StreamId, now: Instant) {
        self.final_reads.insert(stream.clone(), self.seq);
        self.read_now(stream, now);
    }

    fn needs_fast_reads(&self, stream: &StreamId) -> bool {
        self.requests.keys().any(|s| s.stream == *stream)
            || self.adoptable.keys().any(|s| s.stream == *stream)
            || self.held.iter().any(|(s, h)| {
                s.stream == *stream && matches!(h.leaving, Some((_, FinalState::Resolving)))
            })
    }

    /// Nothing we wrote or are writing makes the last read stale for this
    /// shard.
    fn is_fresh(&self, shard: &ShardRef) -> bool {
        !self.busy.contains_key(shard) && !self.changed.contains_key(shard)
    }

    fn on_leases(
        &mut self,
        now: Instant,
        stream: &StreamId,
        sent_seq: u64,
        result: &Result<Vec<LeaseRow>, ErrorClass>,
        mint: &mut IdMint,
    ) {
        if self
            .final_reads
            .get(stream)
            .is_some_and(|after| sent_seq > *after)
        {
            self.final_reads.remove(stream);
        }
        let Some(view) = self.views.get_mut(stream) else {
            return;
        };
        view.reading = false;
        let rows = match result {
            Ok(rows) => rows,
            Err(_) => {
                view.next_read = if view.read_again {
                    view.read_again = false;
                    now
                } else {
                    now + self.timing.retry()
                };
                return;
            }
        };
        let mut fresh: BTreeMap<ShardId, LeaseRow> = BTreeMap::new();
        for row in rows.iter().filter(|r| r.shard.stream == *stream) {
            let mut row = row.clone();
            // Intern: every ShardRef of this worker shares the configured
            // stream id, so map lookups compare it by pointer.
            row.shard.stream = stream.clone();
            fresh.insert(row.shard.shard.clone(), row);
        }
        // Answers that arrived after this read was sent are newer than it.
        self.changed
            .retain(|s, seq| s.stream != *stream || *seq > sent_seq);
        self.refused
            .retain(|s, seq| s.stream != *stream || *seq > sent_seq);
        for shard in self.changed.keys().filter(|s| s.stream == *stream) {
            if let Some(local) = view.rows.get(&shard.shard) {
                fresh.insert(shard.shard.clone(), local.clone());
            }
        }
        view.set_rows(fresh);
        view.have_view = true;
        self.seq += 1;
        view.reply_seq = self.seq;

        self.reconcile(now, stream, mint);
        self.create_missing(now, stream, mint);
        self.balance(now, stream, mint);

        let fast = self.needs_fast_reads(stream);
        let period = if fast {
            self.timing.heartbeat_read
        } else {
            self.timing.rebalance
        };
        let grace = self.timing.heartbeat_read * 2;
        if let Some(view) = self.views.get_mut(stream) {
            // Rows left to their designated creator are checked again once
            // they are overdue.
            // Never in the past: an overdue row was created by this very
            // pass, so a past recheck would only spin reads.
            let recheck = view
                .deferred
                .values()
                .min()
                .map(|since| (*since + grace).max(now + self.timing.heartbeat_read));
            view.next_read = if view.read_again {
                view.read_again = false;
                now
            } else {
                recheck.map_or(now + period, |at| at.min(now + period))
            };
        }
    }

    /// Bring held leases, our requests and rows that name us in line with
    /// a fresh view of `stream`.
    fn reconcile(&mut self, now: Instant, stream: &StreamId, mint: &mut IdMint) {
        let Some(view) = self.views.get(stream) else {
            return;
        };
        let rows = view.rows.clone();
        let row_of = |shard: &ShardRef| rows.get(&shard.shard);

        // Held leases.
        let held: Vec<ShardRef> = self
            .held
            .keys()
            .filter(|s| s.stream == *stream && self.is_fresh(s))
            .cloned()
            .collect();
        for shard in held {
            let Some(h) = self.held.get(&shard).cloned() else {
                continue;
            };
            let row = row_of(&shard);
            let ours =
                row.is_some_and(|r| r.owner.as_ref() == Some(&self.me) && r.token == h.token);
            match &h.leaving {
                Some((leaving, FinalState::Resolving)) => {
                    if ours {
                        // The ambiguous write did not apply: send it again.
                        if let Some(hm) = self.held.get_mut(&shard) {
                            hm.leaving = Some((leaving.clone(), FinalState::Queued));
                        }
                        self.pump_shard(&shard, mint);
                    } else {
                        let reason = match (leaving, row) {
                            (Leaving::Transfer { to, .. }, Some(r))
                                if r.owner.as_ref() == Some(to) && r.token == h.token.next() =>
                            {
                                LostReason::HandedOff
                            }
                            (Leaving::Release { .. }, Some(r))
                                if r.owner.is_none() && r.token > h.token =>
                            {
                                LostReason::Released
                            }
                            (Leaving::Finish, Some(r))
                                if r.checkpoint == Some(Checkpoint::ShardEnd) =>
                            {
                                self.events.push_back(LeaseEvent::CheckpointWritten {
                                    shard: shard.clone(),
                                    checkpoint: Checkpoint::ShardEnd,
                                });
                                LostReason::ShardEnded
                            }
                            _ => LostReason::Taken,
                        };
                        self.lose(&shard, reason);
                    }
                }
                _ if !ours => self.lose(&shard, LostReason::Taken),
                _ => {
                    // Backup path for hand-off requests: the row itself
                    // names a live pending owner. A pending owner that is
                    // gone (it shut down or died right after asking) would
                    // block every later hand-off of the lease: the lease is
                    // given up the same graceful way (`transfer` releases
                    // it instead), which clears the mark.
                    if let Some(p) = row.and_then(|r| r.pending_owner.clone()) {
                        if p != self.me
                            && !self.fenced
                            && !self.shutting_down
                            && (self.is_live(&p) || self.is_expired(&p))
                        {
                            self.request_seen(&shard, &p);
                        }
                    }
                }
            }
        }

        // Rows that name us but that we do not hold.
        let mine: Vec<LeaseRow> = rows
            .values()
            .filter(|r| r.owner.as_ref() == Some(&self.me))
            .filter(|r| !self.held.contains_key(&r.shard) && self.is_fresh(&r.shard))
            .cloned()
            .collect();
        for row in mine {
            let requested = self.requests.remove(&row.shard);
            if requested.as_ref().is_some_and(|r| r.confirmed) {
                self.hb_asap = true;
            }
            let adopt = requested.is_some() || self.adoptable.get(&row.shard) == Some(&row.token);
            self.adoptable.remove(&row.shard);
            if adopt && !self.fenced && !self.shutting_down {
                self.acquire(&row);
            } else {
                self.release_orphan(&row, mint);
            }
        }

        // Ambiguous takes whose row does not name us did not apply.
        let stale: Vec<ShardRef> = self
            .adoptable
            .keys()
            .filter(|s| s.stream == *stream && self.is_fresh(s))
            .cloned()
            .collect();
        for s in stale {
            self.adoptable.remove(&s);
        }

        // Our hand-off requests.
        let reqs: Vec<ShardRef> = self
            .requests
            .keys()
            .filter(|s| s.stream == *stream && self.is_fresh(s))
            .cloned()
            .collect();
        for shard in reqs {
            let Some(req) = self.requests.get(&shard).cloned() else {
                continue;
            };
            let RequestState::Waiting { since } = req.state else {
                continue;
            };
            let row = row_of(&shard);
            let unchanged =
                row.is_some_and(|r| r.owner.as_ref() == Some(&req.owner) && r.token == req.token);
            let pending_me = row.is_some_and(|r| r.pending_owner.as_ref() == Some(&self.me));
            if !(unchanged && pending_me) {
                self.drop_request(&shard);
                continue;
            }
            if !req.confirmed {
                self.hb_asap = true;
            }
            if let Some(r) = self.requests.get_mut(&shard) {
                r.confirmed = true;
            }
            if now.saturating_duration_since(since) >= self.timing.handoff * 2 {
                self.force_take(&shard, mint);
            }
        }
    }

    /// Create rows for known shards a fresh view lacks, without every
    /// worker racing on every row: each missing row has one designated
    /// creator (`creator_ring`, `shard_spread`); the others defer it and
    /// create it only if a view two heartbeat-read intervals later still
    /// lacks it (the designated creator may be dead or slow to read).
    fn create_missing(&mut self, now: Instant, stream: &StreamId, mint: &mut IdMint) {
        if self.shutting_down || self.final_beat != FinalBeat::NotYet {
            // Nothing is created any more, so nothing is deferred either: a
            // deferral left here would schedule a recheck in the past and
            // the stream would be read again at once, forever (fuzz worker,
            // CI run of stop 8).
            if let Some(view) = self.views.get_mut(stream) {
                view.deferred.clear();
            }
            return;
        }
        let Some(view) = self.views.get(stream) else {
            return;
        };
        if !view.have_view {
            return;
        }
        let Some((me, ring)) = self.creator_ring() else {
            // Too early to agree on creators: the second heartbeat read
            // reads this stream again.
            return;
        };
        let grace = self.timing.heartbeat_read * 2;
        let mut create: Vec<(ShardId, Vec<ShardId>)> = Vec::new();
        let mut deferred = BTreeMap::new();
        for (id, parents) in &view.known {
            if view.rows.contains_key(id) {
                continue;
            }
            let shard = ShardRef::new(stream.clone(), id.clone());
            if self.refused.contains_key(&shard) {
                // A create of ours was refused: the row exists.
                continue;
            }
            let since = view.deferred.get(id).copied();
            let overdue = since.is_some_and(|t| now >= t + grace);
            if Self::shard_spread(&shard) % ring == me || overdue {
                create.push((id.clone(), parents.clone()));
            } else {
                deferred.insert(id.clone(), since.unwrap_or(now));
            }
        }
        if let Some(view) = self.views.get_mut(stream) {
            view.deferred = deferred;
        }
        let created_ms = self.unix_ms(now);
        for (id, parents) in create {
            let row = LeaseRow::new(ShardRef::new(stream.clone(), id), parents, created_ms);
            self.send_write(mint, LeaseWrite::Create(row), WriteKind::Create, None);
        }
    }

    /// This worker's place among the live workers (itself included) in
    /// owner order, and their number: the ring that spreads row creation
    /// and free takes. `None` before the second successful heartbeat read:
    /// workers that start together have all written their first heartbeat
    /// by then, so they agree on the ring.
    fn creator_ring(&self) -> Option<(u64, u64)> {
        if self.hb_reads_ok < 2 {
            return None;
        }
        let before = self
            .observed
            .keys()
            .filter(|o| **o < self.me && self.is_live(o))
            .count();
        let ring = self.live_workers();
        Some((before as u64, ring.max(1) as u64))
    }

    /// A stable spread of shards (FNV-1a of the stream and shard ids): the
    /// same on every worker, every platform and every version.
    fn shard_spread(shard: &ShardRef) -> u64 {
        let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
        let bytes = shard
            .stream
            .as_str()
            .bytes()
            .chain(std::iter::once(0xff))
            .chain(shard.shard.as_str().bytes());
        for b in bytes {
            hash ^= u64::from(b);
            hash = hash.wrapping_mul(0x0100_0000_01b3);
        }
        hash
    }

    /// A row counts for balancing when it is not ended and every parent is
    /// ended (or gone: neither listed nor in the table).
    fn is_active(view: &StreamView, row: &LeaseRow) -> bool {
        row.checkpoint != Some(Checkpoint::ShardEnd)
            && row.parents.iter().all(|p| match view.rows.get(p) {
                Some(pr) => pr.checkpoint == Some(Checkpoint::ShardEnd),
                None => view.listed && !view.known.contains_key(p),
            })
    }

    /// The balancing pass after a fresh read of `stream` (only its rows are
    /// taken or asked for, so every take is based on a fresh row).
    fn balance(&mut self, now: Instant, stream: &StreamId, mint: &mut IdMint) {
        if self.fenced
            || self.shutting_down
            || self.last_renew_sent.is_none()
            || self.last_hb_read_sent.is_none()
        {
            return;
        }
        self.quarantined.retain(|_, until| *until > now);
        let live = self.live_workers();
        let mut total = 0usize;
        // Per owner of a row: (owner, live, active rows not requested by
        // us). A handful of owners: a list, each judged once.
        let mut owners: Vec<(&Owner, bool, usize)> = Vec::new();
        for view in self.views.values() {
            for row in view.rows.values() {
                if !Self::is_active(view, row) {
                    continue;
                }
                total += 1;
                let Some(o) = &row.owner else {
                    continue;
                };
                if *o == self.me
                    || (!self.requests.is_empty() && self.requests.contains_key(&row.shard))
                {
                    continue;
                }
                match owners.iter_mut().find(|(x, _, _)| *x == o) {
                    Some((_, _, n)) => *n += 1,
                    None => owners.push((o, self.is_live(o), 1)),
                }
            }
        }
        let mut loads: BTreeMap<Owner, usize> = owners
            .into_iter()
            .filter(|(_, live, _)| *live)
            .map(|(o, _, n)| (o.clone(), n))
            .collect();
        let target = total.div_ceil(live.max(1));
        let plain_takes = self
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
        let staying = self.held.values().filter(|h| h.leaving.is_none()).count();
        let load = staying + plain_takes + self.requests.len();
        let mut deficit = target.saturating_sub(load);
        if deficit == 0 {
            return;
        }
        let Some(view) = self.views.get(stream) else {
            return;
        };
        let candidates: Vec<LeaseRow> = view
            .rows
            .values()
            .filter(|r| Self::is_active(view, r))
            .filter(|r| r.owner.as_ref() != Some(&self.me))
            .filter(|r| !self.quarantined.contains_key(&r.shard))
            // Rows we wrote since the read was sent show our own answered
            // write (newer than the read): fine to act on; every take is
            // conditional anyway. Rows with a write in flight are not.
            .filter(|r| !self.held.contains_key(&r.shard) && !self.busy.contains_key(&r.shard))
            .filter(|r| !self.adoptable.contains_key(&r.shard))
            .filter(|r| !self.refused.contains_key(&r.shard))
            .cloned()
            .collect();
        // Workers that balance on the same fresh rows (a fleet starting
        // together) would all take the same first free rows: each takes
        // the rows the ring designates to it first, then its neighbours'.
        let mut candidates = candidates;
        if let Some((me, ring)) = self.creator_ring() {
            candidates
                .sort_by_cached_key(|r| (Self::shard_spread(&r.shard) % ring + ring - me) % ring);
        }

        // 1. Free and expired leases. An expiry judged at heartbeat read r
        // holds only for (owner, token) pairs that existed before r: the
        // owner may have renewed and taken leases afresh since. So a dead
        // owner's row is taken only when r was sent after this view
        // arrived; otherwise confirm with a heartbeat read first.
        let confirmed = self.last_hb_read_seq > view.reply_seq;
        let mut needs_confirm = false;
        for row in &candidates {
            if deficit == 0 {
                break;
            }
            let takable = match &row.owner {
                None => true,
                Some(o) if self.is_expired(o) => {
                    needs_confirm |= !confirmed;
                    confirmed
                }
                Some(_) => false,
            };
            if !takable {
                continue;
            }
            if self.requests.contains_key(&row.shard) {
                // Our request's owner died: take by force right away (the
                // request is already counted in the load).
                self.force_take(&row.shard, mint);
                continue;
            }
            let write = LeaseWrite::Take {
                shard: row.shard.clone(),
                expect_owner: row.owner.clone(),
                expect_token: row.token,
                to: self.me.clone(),
            };
            if self.send_write(
                mint,
                write,
                WriteKind::Take { forced: false },
                Some(row.clone()),
            ) {
                deficit -= 1;
            }
        }

        if needs_confirm {
            if let Some(v) = self.views.get_mut(stream) {
                v.confirm = true;
            }
            self.next_hb_read = self.next_hb_read.min(now);
        }

        // 2. Ask the most loaded live workers for the rest.
        let mut offer: BTreeMap<Owner, VecDeque<LeaseRow>> = BTreeMap::new();
        for row in &candidates {
            let Some(o) = &row.owner else {
                continue;
            };
            if !self.is_live(o) || self.requests.contains_key(&row.shard) {
                continue;
            }
            match &row.pending_owner {
                None => {}
                Some(p) if *p == self.me => {}
                Some(_) => continue,
            }
            offer.entry(o.clone()).or_default().push_back(row.clone());
        }
        while deficit > 0 {
            let best = loads
                .iter()
                .filter(|(o, l)| **l > target && offer.get(*o).is_some_and(|q| !q.is_empty()))
                .max_by(|a, b| a.1.cmp(b.1).then_with(|| b.0.cmp(a.0)))
                .map(|(o, _)| o.clone());
            let Some(owner) = best else {
                break;
            };
            let Some(row) = offer.get_mut(&owner).and_then(|q| q.pop_front()) else {
                break;
            };
            if let Some(l) = loads.get_mut(&owner) {
                *l -= 1;
            }
            if row.pending_owner.as_ref() == Some(&self.me) {
                // An earlier request of ours that we lost track of (fence,
                // ambiguous answer): it stands; wait for the transfer.
                self.requests.insert(
                    row.shard.clone(),
                    Request {
                        owner: owner.clone(),
                        token: row.token,
                        state: RequestState::Waiting { since: now },
                        confirmed: true,
                    },
                );
                self.hb_asap = true;
                deficit -= 1;
                continue;
            }
            let write = LeaseWrite::RequestHandoff {
                shard: row.shard.clone(),
                owner: owner.clone(),
                token: row.token,
                pending: self.me.clone(),
            };
            if self.send_write(mint, write, WriteKind::Request, Some(row.clone())) {
                self.requests.insert(
                    row.shard.clone(),
                    Request {
                        owner: owner.clone(),
                        token: row.token,
                        state: RequestState::Sending,
                        confirmed: false,
                    },
                );
                deficit -= 1;
            }
        }
    }

    // ----- lease writes --------------------------------------------------

    /// Emit a lease write unless one is in flight for the shard.
    fn send_write(
        &mut self,
        mint: &mut IdMint,
        write: LeaseWrite,
        kind: WriteKind,
        base: Option<LeaseRow>,
    ) -> bool {
        let shard = write.shard().clone();
        if self.busy.contains_key(&shard) {
            return false;
        }
        if let LeaseWrite::Take {
            expect_owner: Some(o),
            ..
        } = &write
        {
            if *o == self.me {
                self.violation = Some(format!("{shard:?}: refused to take a lease from ourselves"));
                return false;
            }
        }
        let op = mint.op();
        match kind {
            WriteKind::Checkpoint => self.stats.checkpoint_writes += 1,
            _ => self.stats.other_lease_writes += 1,
        }
        self.busy.insert(shard, op);
        self.ops.insert(
            op,
            Op::WriteLease {
                write: write.clone(),
                kind,
                base: Box::new(base),
            },
        );
        self.actions.push_back(Action::WriteLease { op, write });
        true
    }

    /// Take a requested lease by force, conditional on the observed token.
    fn force_take(&mut self, shard: &ShardRef, mint: &mut IdMint) -> bool {
        let Some(req) = self.requests.get(shard).cloned() else {
            return false;
        };
        let since = match req.state {
            RequestState::Waiting { since } => since,
            RequestState::Sending | RequestState::Forcing { .. } => return false,
        };
        let base = self
            .views
            .get(&shard.stream)
            .and_then(|v| v.rows.get(&shard.shard))
            .cloned();
        let write = LeaseWrite::Take {
            shard: shard.clone(),
            expect_owner: Some(req.owner.clone()),
            expect_token: req.token,
            to: self.me.clone(),
        };
        if !self.send_write(mint, write, WriteKind::Take { forced: true }, base) {
            return false;
        }
        if let Some(r) = self.requests.get_mut(shard) {
            r.state = RequestState::Forcing { since };
        }
        true
    }

    /// Give up a row that names us but that we do not hold.
    fn release_orphan(&mut self, row: &LeaseRow, mint: &mut IdMint) {
        let write = LeaseWrite::Release {
            shard: row.shard.clone(),
            owner: self.me.clone(),
            token: row.token,
            checkpoint: None,
        };
        self.send_write(mint, write, WriteKind::Orphan, Some(row.clone()));
    }

    /// Send the next write of a held lease if none is in flight: its final
    /// write when leaving, else the newest queued checkpoint.
    fn pump_shard(&mut self, shard: &ShardRef, mint: &mut IdMint) {
        if self.busy.contains_key(shard) {
            return;
        }
        let base = self
            .views
            .get(&shard.stream)
            .and_then(|v| v.rows.get(&shard.shard))
            .cloned();
        let me = self.me.clone();
        let Some(h) = self.held.get_mut(shard) else {
            return;
        };
        let token = h.token;
        if let Some((_, state)) = h.leaving.as_mut() {
            if *state != FinalState::Queued {
                return;
            }
            *state = FinalState::Sent;
            if let Some(write) = Self::final_write(&me, shard, h) {
                self.send_write(mint, write, WriteKind::Final, base);
            }
            return;
        }
        let Some(cp) = h.cp_queued.take() else {
            return;
        };
        if h.confirmed.as_ref().is_some_and(|c| cp <= *c) {
            return;
        }
        h.cp_sent = Some(cp.clone());
        let write = LeaseWrite::Checkpoint {
            shard: shard.clone(),
            owner: me,
            token,
            checkpoint: cp,
        };
        self.send_write(mint, write, WriteKind::Checkpoint, base);
    }

    /// The final write of a leaving lease: its transfer or release, with a
    /// queued checkpoint folded in (never moving the stored one backwards).
    /// `None` when the lease is not leaving.
    fn final_write(me: &Owner, shard: &ShardRef, h: &mut Held) -> Option<LeaseWrite> {
        let token = h.token;
        let queued = h.cp_queued.take();
        let confirmed = h.confirmed.clone();
        let ahead = |cp: Option<Checkpoint>| cp.filter(|c| Some(c) > confirmed.as_ref());
        let (leaving, _) = h.leaving.as_mut()?;
        Some(match leaving {
            Leaving::Transfer { to, checkpoint } => {
                *checkpoint = ahead(checkpoint.take().max(queued));
                LeaseWrite::Transfer {
                    shard: shard.clone(),
                    owner: me.clone(),
                    token,
                    to: to.clone(),
                    checkpoint: checkpoint.clone(),
                }
            }
            Leaving::Release { checkpoint, .. } => {
                *checkpoint = ahead(checkpoint.take().max(queued));
                LeaseWrite::Release {
                    shard: shard.clone(),
                    owner: me.clone(),
                    token,
                    checkpoint: checkpoint.clone(),
                }
            }
            Leaving::Finish => LeaseWrite::Release {
                shard: shard.clone(),
                owner: me.clone(),
                token,
                checkpoint: Some(Checkpoint::ShardEnd),
            },
        })
    }

    #[allow(clippy::too_many_arguments)]
    fn on_lease_written(
        &mut self,
        now: Instant,
        op: OpId,
        write: LeaseWrite,
        kind: WriteKind,
        base: Option<LeaseRow>,
        result: Result<(), ErrorClass>,
        mint: &mut IdMint,
    ) {
        let shard = write.shard().clone();
        if self.busy.get(&shard) == Some(&op) {
            self.busy.remove(&shard);
        }
        if matches!(result, Ok(()) | Err(ErrorClass::Ambiguous)) {
            // Applied, or maybe: a read sent before this answer says
            // nothing about the row any more.
            self.seq += 1;
            self.changed.insert(shard.clone(), self.seq);
        }
        let applied = match result {
            Ok(()) => {
                let next = match &write {
                    LeaseWrite::Create(row) => Some(row.clone()),
                    w => base.as_ref().and_then(|b| w.apply(Some(b)).ok()),
                };
                if let (Some(next), Some(view)) = (&next, self.views.get_mut(&shard.stream)) {
                    let keep_existing = matches!(write, LeaseWrite::Create(_))
                        && view.rows.contains_key(&shard.shard);
                    if !keep_existing {
                        view.set_row(shard.shard.clone(), next.clone());
                    }
                }
                next
            }
            Err(ErrorClass::ConditionalFailed) => {
                self.stats.conditional_failures += 1;
                self.seq += 1;
                self.refused.insert(shard.clone(), self.seq);
                None
            }
            Err(_) => None,
        };
        match kind {
            WriteKind::Create | WriteKind::Orphan => {
                if result.is_ok() && !self.shutting_down {
                    // A free row now: balance on a fresh view.
                    self.read_now(&shard.stream, now);
                }
            }
            WriteKind::Take { forced } => {
                let row = applied.or(base);
                self.on_take_answer(now, &write, forced, row, result, mint)
            }
            WriteKind::Request => match result {
                Ok(()) | Err(ErrorClass::Ambiguous) if self.shutting_down => {
                    // Asked (maybe) while shutting down: the owner may
                    // still hand the lease over to us.
                    self.read_once_more(&shard.stream, now);
                }
                Ok(()) => {
                    if let Some(r) = self.requests.get_mut(&shard) {
                        r.state = RequestState::Waiting { since: now };
                        r.confirmed = true;
                        self.hb_asap = true;
                    }
                    self.read_soon(&shard.stream, now);
                }
                Err(ErrorClass::Ambiguous) => {
                    if let Some(r) = self.requests.get_mut(&shard) {
                        r.state = RequestState::Waiting { since: now };
                    }
                    self.read_soon(&shard.stream, now);
                }
                Err(_) => self.drop_request(&shard),
            },
            WriteKind::Checkpoint => {
                let LeaseWrite::Checkpoint {
                    token, checkpoint, ..
                } = &write
                else {
                    return;
                };
                let Some(h) = self.held.get_mut(&shard) else {
                    return;
                };
                if h.token != *token {
                    return;
                }
                h.cp_sent = None;
                match result {
                    Ok(()) => {
                        if h.confirmed.as_ref().is_none_or(|c| checkpoint > c) {
                            h.confirmed = Some(checkpoint.clone());
                        }
                        self.events.push_back(LeaseEvent::CheckpointWritten {
                            shard: shard.clone(),
                            checkpoint: checkpoint.clone(),
                        });
                    }
                    Err(ErrorClass::ConditionalFailed) => {
                        self.lose(&shard, LostReason::Taken);
                        return;
                    }
                    // Not stored (or not known to be): the next write
                    // carries the newest checkpoint.
                    Err(_) => {}
                }
                self.pump_shard(&shard, mint);
            }
            WriteKind::Final => {
                let Some(h) = self.held.get_mut(&shard) else {
                    return;
                };
                let Some((leaving, state)) = h.leaving.as_mut() else {
                    return;
                };
                match result {
                    Ok(()) => {
                        let reason = match leaving {
                            Leaving::Transfer { .. } => LostReason::HandedOff,
                            Leaving::Release { reread, .. } => {
                                if *reread && !self.shutting_down {
                                    // The hand-off's taker was gone: the
                                    // row is free, balance it again now.
                                    self.read_now(&shard.stream, now);
                                }
                                LostReason::Released
                            }
                            Leaving::Finish => {
                                self.events.push_back(LeaseEvent::CheckpointWritten {
                                    shard: shard.clone(),
                                    checkpoint: Checkpoint::ShardEnd,
                                });
                                // Children become takable: balance on a
                                // fresh view right away.
                                self.read_now(&shard.stream, now);
                                LostReason::ShardEnded
                            }
                        };
                        self.lose(&shard, reason);
                    }
                    Err(ErrorClass::ConditionalFailed) => self.lose(&shard, LostReason::Taken),
                    Err(ErrorClass::Ambiguous) => {
                        *state = FinalState::Resolving;
                        self.read_now(&shard.stream, now);
                    }
                    Err(_) => {
                        let at = now + self.timing.retry();
                        *state = FinalState::RetryAt(at);
                        self.retry_at = Some(self.retry_at.map_or(at, |r| r.min(at)));
                    }
                }
            }
        }
    }

    fn on_take_answer(
        &mut self,
        now: Instant,
        write: &LeaseWrite,
        forced: bool,
        row: Option<LeaseRow>,
        result: Result<(), ErrorClass>,
        mint: &mut IdMint,
    ) {
        let LeaseWrite::Take {
            shard,
            expect_token,
            ..
        } = write
        else {
            return;
        };
        match result {
            Ok(()) => {
                let request = self.requests.remove(shard);
                if request.is_some_and(|r| r.confirmed) {
                    self.hb_asap = true;
                }
                // The row after the write: our view's row with the take
                // applied (checkpoint and creation time as last read).
                let mut row = row
                    .unwrap_or_else(|| LeaseRow::new(shard.clone(), Vec::new(), self.unix_ms(now)));
                row.owner = Some(self.me.clone());
                row.token = expect_token.next();
                row.pending_owner = None;
                if self.fenced || self.shutting_down || self.held.contains_key(shard) {
                    self.release_orphan(&row, mint);
                } else {
                    self.acquire(&row);
                }
            }
            Err(ErrorClass::Ambiguous) => {
                if self.requests.remove(shard).is_some_and(|r| r.confirmed) {
                    self.hb_asap = true;
                }
                if self.shutting_down {
                    // The row may name us: release it before leaving.
                    self.read_once_more(&shard.stream, now);
                } else if !self.fenced {
                    self.adoptable.insert(shard.clone(), expect_token.next());
                }
                self.read_now(&shard.stream, now);
            }
            Err(class) => {
                if forced {
                    if let Some(r) = self.requests.get_mut(shard) {
                        if let RequestState::Forcing { since } = r.state {
                            r.state = RequestState::Waiting { since };
                        }
                    }
                    if class == ErrorClass::ConditionalFailed && self.shutting_down {
                        // The owner may have transferred to us meanwhile.
                        self.read_once_more(&shard.stream, now);
                    } else if class == ErrorClass::ConditionalFailed {
                        // The owner may have transferred to us meanwhile.
                        self.read_now(&shard.stream, now);
                    } else {
                        self.read_soon(&shard.stream, now);
                    }
                }
            }
        }
    }

    // ----- bookkeeping ---------------------------------------------------

    fn acquire(&mut self, row: &LeaseRow) {
        if self.held.contains_key(&row.shard) {
            self.violation = Some(format!("{:?} acquired twice", row.shard));
            return;
        }
        self.held.insert(
            row.shard.clone(),
            Held {
                token: row.token,
                handoff_to: None,
                confirmed: row.checkpoint.clone(),
                cp_sent: None,
                cp_queued: None,
                leaving: None,
            },
        );
        self.events.push_back(LeaseEvent::Acquired {
            shard: row.shard.clone(),
            token: row.token,
            checkpoint: row.checkpoint.clone(),
            created_ms: row.created_ms,
        });
    }

    fn lose(&mut self, shard: &ShardRef, reason: LostReason) {
        if let Some(h) = self.held.remove(shard) {
            if matches!(h.leaving, Some((_, FinalState::RetryAt(_)))) {
                self.recompute_retry_at();
            }
            self.events.push_back(LeaseEvent::Lost {
                shard: shard.clone(),
                token: h.token,
                reason,
            });
        }
    }

    /// `retry_at` from a walk of the held leases.
    fn recompute_retry_at(&mut self) {
        self.retry_at = self
            .held
            .values()
            .filter_map(|h| match h.leaving {
                Some((_, FinalState::RetryAt(at))) => Some(at),
                _ => None,
            })
            .min();
    }

    fn drop_request(&mut self, shard: &ShardRef) {
        if self.requests.remove(shard).is_some_and(|r| r.confirmed) {
            self.hb_asap = true;
        }
    }

    fn drop_requests(&mut self) {
        if self.requests.values().any(|r| r.confirmed) {
            self.hb_asap = true;
        }
        self.requests.clear();
    }
}

#[cfg(test)]
mod tests {
    //! An in-memory lease table applying [`LeaseWrite::apply`], several
    //! managers with their own clocks, and a router that executes their
    //! actions and feeds the answers back, with scripted faults.

    use super::*;
    use crate::config::Retrieval;
    use crate::kpl::HashRange;
    use crate::sequence::SeqNum;
    use std::collections::BTreeSet;

    const SECOND: Duration = Duration::from_secs(1);

    fn secs(s: f64) -> Duration {
        Duration::from_secs_f64(s)
    }

    fn stream() -> StreamId {
        StreamId::new("arn:aws:kinesis:us-east-1:000000000000:stream/orders")
    }

    fn sref(i: usize) -> ShardRef {
        ShardRef::new(stream(), ShardId::new(format!("shardId-{i:012}")))
    }

    fn sid(i: usize) -> ShardId {
        sref(i).shard
    }

    fn cp(n: u64) -> Checkpoint {
        Checkpoint::After(SeqNum::parse(&n.to_string()).unwrap())
    }

    fn config(owner: &Owner) -> Config {
        Config::new(vec![stream()], owner.clone(), Retrieval::polling())
    }

    /// What goes wrong with one action.
    #[derive(Clone, Copy, Debug, PartialEq, Eq)]
    enum Fault {
        /// Applied, answer lost: `Ambiguous`.
        Ambiguous,
        /// Not applied, answer lost: `Ambiguous`.
        LostRequest,
        /// Not applied: `Transient`.
        Transient,
        /// Executed now, answered at `deliver`.
        HoldAnswer,
        /// Executed and answered at `deliver`.
        HoldRequest,
    }

    struct Rule {
        pred: fn(&Action) -> bool,
        fault: Fault,
        times: usize,
    }

    enum Stashed {
        Answer(Input),
        Request(Action),
    }

    struct Node {
        me: Owner,
        mgr: LeaseManager,
        mint: IdMint,
        offset: Duration,
        up: bool,
        partitioned: bool,
        auto_transfer: bool,
        rules: Vec<Rule>,
        stash: Vec<Stashed>,
        chaos: Option<(u64, u64)>,
        actions: Vec<(Duration, Action)>,
        events: Vec<(Duration, LeaseEvent)>,
    }

    struct World {
        epoch: Instant,
        t: Duration,
        rows: BTreeMap<ShardRef, LeaseRow>,
        beats: BTreeMap<String, HeartbeatRow>,
        nodes: Vec<Node>,
        /// Rules for the next node added.
        pending_rules: Vec<Rule>,
        /// Check after every step that each shard is read by at most one
        /// node, with the table's (owner, token).
        strict: bool,
    }

    fn is_hb_write(a: &Action) -> bool {
        matches!(a, Action::WriteHeartbeat { .. })
    }
    fn is_hb_read(a: &Action) -> bool {
        matches!(a, Action::ReadHeartbeats { .. })
    }
    fn is_read(a: &Action) -> bool {
        matches!(a, Action::ReadLeases { .. })
    }
    fn is_take(a: &Action) -> bool {
        matches!(
            a,
            Action::WriteLease {
                write: LeaseWrite::Take { .. },
                ..
            }
        )
    }
    fn is_checkpoint(a: &Action) -> bool {
        matches!(
            a,
            Action::WriteLease {
                write: LeaseWrite::Checkpoint { .. },
                ..
            }
        )
    }
    fn is_release(a: &Action) -> bool {
        matches!(
            a,
            Action::WriteLease {
                write: LeaseWrite::Release { .. },
                ..
            }
        )
    }

    fn write_of(a: &Action) -> Option<&LeaseWrite> {
        match a {
            Action::WriteLease { write, .. } => Some(write),
            _ => None,
        }
    }

    impl World {
        fn new() -> World {
            World {
                // The only clock read in this module: one fixed epoch.
                epoch: crate::test_epoch(),
                t: Duration::ZERO,
                rows: BTreeMap::new(),
                beats: BTreeMap::new(),
                nodes: Vec::new(),
                pending_rules: Vec::new(),
                strict: true,
            }
        }

        fn with_free_shards(n: usize) -> World {
            let mut w = World::new();
            for i in 0..n {
                w.add_row(LeaseRow::new(sref(i), vec![], 1));
            }
            w
        }

        fn add_row(&mut self, row: LeaseRow) {
            self.rows.insert(row.shard.clone(), row);
        }

        fn row(&self, i: usize) -> &LeaseRow {
            &self.rows[&sref(i)]
        }

        /// A worker process starting now, with its own clock (a different
        /// monotonic origin and a different wall clock per node).
        fn add_node(&mut self, worker: &str, incarnation: u64) -> usize {
            self.add_node_with(worker, incarnation, |_| {})
        }

        /// As `add_node`, with `pre` run on the manager before its first
        /// call (e.g. to give it leases held by a process we do not model).
        fn add_node_with(
            &mut self,
            worker: &str,
            incarnation: u64,
            pre: impl FnOnce(&mut LeaseManager),
        ) -> usize {
            let i = self.nodes.len();
            let me = Owner::new(worker, incarnation);
            let offset = Duration::from_secs(1_000_000 * (i as u64 + 1))
                + Duration::from_millis(137 * i as u64);
            let now = self.epoch + offset + self.t;
            let mut mgr =
                LeaseManager::new(&config(&me), now, 1_700_000_000_000 + 86_400_000 * i as u64);
            pre(&mut mgr);
            self.nodes.push(Node {
                me,
                mgr,
                mint: IdMint::default(),
                offset,
                up: true,
                partitioned: false,
                auto_transfer: true,
                rules: std::mem::take(&mut self.pending_rules),
                stash: Vec::new(),
                chaos: None,
                actions: Vec::new(),
                events: Vec::new(),
            });
            self.fire(i);
            i
        }

        /// The process dies: memory lost, table kept.
        fn kill(&mut self, i: usize) {
            self.nodes[i].up = false;
        }

        /// A new incarnation of a dead worker.
        fn restart(&mut self, i: usize) -> usize {
            self.kill(i);
            let worker = self.nodes[i].me.worker.to_string();
            let inc = self.nodes[i].me.incarnation + 1;
            let j = self.add_node(&worker, inc);
            // Keep the index stable for the caller, and the history.
            self.nodes.swap(i, j);
            let old = self.nodes.pop().map(|n| n.events).unwrap_or_default();
            let new = std::mem::replace(&mut self.nodes[i].events, old);
            self.nodes[i].events.extend(new);
            i
        }

        fn now(&self, i: usize) -> Instant {
            self.epoch + self.nodes[i].offset + self.t
        }

        /// A scripted fault; `i` may be the index of the next node to be
        /// added (so its start-up calls can fail).
        fn rule(&mut self, i: usize, pred: fn(&Action) -> bool, fault: Fault, times: usize) {
            let rule = Rule { pred, fault, times };
            match self.nodes.get_mut(i) {
                Some(n) => n.rules.push(rule),
                None => self.pending_rules.push(rule),
            }
        }

        fn clear_rules(&mut self, i: usize) {
            self.nodes[i].rules.clear();
        }

        fn fault_for(&mut self, i: usize, a: &Action) -> Option<Fault> {
            let node = &mut self.nodes[i];
            if node.partitioned {
                return Some(Fault::Transient);
            }
            if let Some(r) = node.rules.iter_mut().find(|r| r.times > 0 && (r.pred)(a)) {
                r.times -= 1;
                return Some(r.fault);
            }
            if let Some((state, permille)) = node.chaos.as_mut() {
                *state = state
                    .wrapping_mul(6364136223846793005)
                    .wrapping_add(1442695040888963407);
                let x = (*state >> 33) % 1000;
                if x < *permille {
                    return Some(match x % 4 {
                        0 => Fault::Ambiguous,
                        1 => Fault::LostRequest,
                        2 => Fault::Transient,
                        _ => Fault::HoldAnswer,
                    });
                }
            }
            None
        }

        /// Execute against the table and build the answer.
        fn execute(&mut self, a: &Action, apply: bool) -> Option<Input> {
            Some(match a {
                Action::ReadLeases { op, stream } => Input::Leases {
                    op: *op,
                    result: Ok(self
                        .rows
                        .values()
                        .filter(|r| r.shard.stream == *stream)
                        .cloned()
                        .collect()),
                },
                Action::ReadHeartbeats { op } => Input::Heartbeats {
                    op: *op,
                    result: Ok(self.beats.values().cloned().collect()),
                },
                Action::WriteHeartbeat { op, row } => {
                    if apply {
                        self.beats.insert(row.owner.worker.to_string(), row.clone());
                    }
                    Input::HeartbeatWritten {
                        op: *op,
                        result: Ok(()),
                    }
                }
                Action::WriteLease { op, write } => {
                    let result = match write.apply(self.rows.get(write.shard())) {
                        Ok(next) => {
                            if apply {
                                self.rows.insert(next.shard.clone(), next);
                            }
                            Ok(())
                        }
                        Err(_) => Err(ErrorClass::ConditionalFailed),
                    };
                    Input::LeaseWritten { op: *op, result }
                }
                _ => return None,
            })
        }

        fn with_error(input: Input, class: ErrorClass) -> Input {
            match input {
                Input::Leases { op, .. } => Input::Leases {
                    op,
                    result: Err(class),
                },
                Input::Heartbeats { op, .. } => Input::Heartbeats {
                    op,
                    result: Err(class),
                },
                Input::HeartbeatWritten { op, .. } => Input::HeartbeatWritten {
                    op,
                    result: Err(class),
                },
                Input::LeaseWritten { op, .. } => Input::LeaseWritten {
                    op,
                    result: Err(class),
                },
                other => other,
            }
        }

        /// Run the node's I/O until it is quiet.
        fn pump(&mut self, i: usize) {
            for _ in 0..10_000 {
                if !self.nodes[i].up {
                    return;
                }
                let now = self.now(i);
                let mut progress = false;
                while let Some(a) = self.nodes[i].mgr.poll_action() {
                    progress = true;
                    self.nodes[i].actions.push((self.t, a.clone()));
                    let answer = match self.fault_for(i, &a) {
                        None => self.execute(&a, true),
                        Some(Fault::Ambiguous) => self
                            .execute(&a, true)
                            .map(|x| Self::with_error(x, ErrorClass::Ambiguous)),
                        Some(Fault::LostRequest) => self
                            .execute(&a, false)
                            .map(|x| Self::with_error(x, ErrorClass::Ambiguous)),
                        Some(Fault::Transient) => self
                            .execute(&a, false)
                            .map(|x| Self::with_error(x, ErrorClass::Transient)),
                        Some(Fault::HoldAnswer) => {
                            if let Some(x) = self.execute(&a, true) {
                                self.nodes[i].stash.push(Stashed::Answer(x));
                            }
                            None
                        }
                        Some(Fault::HoldRequest) => {
                            self.nodes[i].stash.push(Stashed::Request(a.clone()));
                            None
                        }
                    };
                    if let Some(input) = answer {
                        let n = &mut self.nodes[i];
                        assert!(
                            n.mgr.handle_input(now, &input, &mut n.mint),
                            "own answer not consumed"
                        );
                    }
                }
                while let Some(e) = self.nodes[i].mgr.poll_event() {
                    progress = true;
                    self.nodes[i].events.push((self.t, e.clone()));
                    if let LeaseEvent::HandoffRequested { shard, .. } = &e {
                        if self.nodes[i].auto_transfer {
                            let n = &mut self.nodes[i];
                            n.mgr.transfer(now, shard, Some(cp(100)), &mut n.mint);
                        }
                    }
                }
                if !progress {
                    self.check();
                    return;
                }
            }
            panic!("node {i} never went quiet");
        }

        /// Answer everything stashed by the node, in order.
        fn deliver(&mut self, i: usize) {
            if !self.nodes[i].up {
                self.nodes[i].stash.clear();
                return;
            }
            let now = self.now(i);
            for s in std::mem::take(&mut self.nodes[i].stash) {
                let input = match s {
                    Stashed::Answer(x) => Some(x),
                    Stashed::Request(a) => self.execute(&a, true),
                };
                if let Some(input) = input {
                    let n = &mut self.nodes[i];
                    assert!(n.mgr.handle_input(now, &input, &mut n.mint));
                }
            }
            self.pump(i);
        }

        /// Call a command on a node, then pump.
        fn with(&mut self, i: usize, f: impl FnOnce(&mut LeaseManager, Instant, &mut IdMint)) {
            let now = self.now(i);
            let n = &mut self.nodes[i];
            f(&mut n.mgr, now, &mut n.mint);
            self.pump(i);
        }

        fn fire(&mut self, i: usize) {
            let now = self.now(i);
            let n = &mut self.nodes[i];
            n.mgr.handle_timeout(now, &mut n.mint);
            self.pump(i);
        }

        /// Advance to `end`, firing every node's timers exactly when due.
        fn run_until(&mut self, end: Duration) {
            for _ in 0..5_000_000 {
                let next = (0..self.nodes.len())
                    .filter(|&i| self.nodes[i].up)
                    .filter_map(|i| {
                        let (at, _) = self.nodes[i].mgr.poll_timeout()?;
                        Some(at.saturating_duration_since(self.epoch + self.nodes[i].offset))
                    })
                    .min();
                match next {
                    Some(at) if at <= end => {
                        self.t = self.t.max(at);
                        for i in 0..self.nodes.len() {
                            let due = self.nodes[i].up
                                && self.nodes[i]
                                    .mgr
                                    .poll_timeout()
                                    .is_some_and(|(d, _)| d <= self.now(i));
                            if due {
                                self.fire(i);
                            }
                        }
                    }
                    _ => {
                        self.t = end;
                        return;
                    }
                }
            }
            panic!("timers never settled");
        }

        fn run_for(&mut self, d: Duration) {
            self.run_until(self.t + d);
        }

        /// Leases a node reads (held and not being given up).
        fn reading(&self, i: usize) -> BTreeSet<ShardRef> {
            let n = &self.nodes[i];
            if !n.up {
                return BTreeSet::new();
            }
            n.mgr
                .held
                .iter()
                .filter(|(_, h)| h.leaving.is_none())
                .map(|(s, _)| s.clone())
                .collect()
        }

        fn holds(&self, i: usize) -> usize {
            self.nodes[i].mgr.held().count()
        }

        fn check(&self) {
            for n in self.nodes.iter().filter(|n| n.up) {
                n.mgr.check_invariants().unwrap();
                // Point 9: never a take of a row we own.
                for (_, a) in &n.actions {
                    if let Some(LeaseWrite::Take {
                        expect_owner, to, ..
                    }) = write_of(a)
                    {
                        assert_eq!(to, &n.me);
                        assert_ne!(
                            expect_owner.as_ref(),
                            Some(&n.me),
                            "took a lease from itself"
                        );
                    }
                }
            }
            if !self.strict {
                return;
            }
            let mut seen: BTreeMap<&ShardRef, usize> = BTreeMap::new();
            for (i, n) in self.nodes.iter().enumerate().filter(|(_, n)| n.up) {
                for (shard, h) in n.mgr.held.iter().filter(|(_, h)| h.leaving.is_none()) {
                    if let Some(j) = seen.insert(shard, i) {
                        self.dump(shard);
                        panic!("t={:?}: {shard:?} read by nodes {j} and {i}", self.t);
                    }
                    let row = &self.rows[shard];
                    if (row.owner.as_ref(), row.token) != (Some(&n.me), h.token) {
                        self.dump(shard);
                    }
                    assert_eq!(
                        (row.owner.as_ref(), row.token),
                        (Some(&n.me), h.token),
                        "t={:?}: node {i} reads {shard:?} without the table's (owner, token)",
                        self.t
                    );
                }
            }
        }

        /// Print the history of one shard (on a failed check).
        fn dump(&self, shard: &ShardRef) {
            for (k, n) in self.nodes.iter().enumerate() {
                for (t, x) in &n.actions {
                    if write_of(x).is_some_and(|w| w.shard() == shard) || is_hb_write(x) {
                        eprintln!("node {k} {t:?} {x:?}");
                    }
                }
                for (t, e) in &n.events {
                    eprintln!("node {k} {t:?} {e:?}");
                }
            }
        }

        fn events(&self, i: usize) -> impl Iterator<Item = &(Duration, LeaseEvent)> {
            self.nodes[i].events.iter()
        }

        fn acquired(
            &self,
            i: usize,
        ) -> Vec<(Duration, ShardRef, FencingToken, Option<Checkpoint>)> {
            self.events(i)
                .filter_map(|(t, e)| match e {
                    LeaseEvent::Acquired {
                        shard,
                        token,
                        checkpoint,
                        ..
                    } => Some((*t, shard.clone(), *token, checkpoint.clone())),
                    _ => None,
                })
                .collect()
        }

        fn lost(&self, i: usize) -> Vec<(Duration, ShardRef, LostReason)> {
            self.events(i)
                .filter_map(|(t, e)| match e {
                    LeaseEvent::Lost { shard, reason, .. } => Some((*t, shard.clone(), *reason)),
                    _ => None,
                })
                .collect()
        }

        fn actions(&self, i: usize, pred: fn(&Action) -> bool) -> Vec<(Duration, Action)> {
            self.nodes[i]
                .actions
                .iter()
                .filter(|(_, a)| pred(a))
                .cloned()
                .collect()
        }

        /// Owner of the row, as a node index.
        fn owner_of(&self, shard: &ShardRef) -> Option<usize> {
            let o = self.rows[shard].owner.as_ref()?;
            self.nodes.iter().position(|n| n.up && &n.me == o)
        }
    }

    // ----- heartbeat and self-fence ----------------------------------------

    #[test]
    fn heartbeat_written_first_then_every_third_of_failover_time() {
        let mut w = World::new();
        w.add_node("a", 1);
        let first = &w.nodes[0].actions[0].1;
        assert!(
            is_hb_write(first),
            "first action is the heartbeat: {first:?}"
        );
        w.run_until(secs(20.0));
        let beats: Vec<(Duration, u64, bool)> = w
            .actions(0, is_hb_write)
            .into_iter()
            .map(|(t, a)| match a {
                Action::WriteHeartbeat { row, .. } => (t, row.beat, row.alive),
                _ => unreachable!(),
            })
            .collect();
        let interval = Duration::from_secs(10) / 3;
        let expect: Vec<(Duration, u64, bool)> = (0..7u32)
            .map(|k| (interval * k, u64::from(k) + 1, true))
            .collect();
        assert_eq!(beats, expect);
        assert_eq!(w.beats["a"].beat, 7);
        assert_eq!(w.nodes[0].mgr.stats().heartbeat_writes, 7);
    }

    #[test]
    fn first_heartbeat_answered_after_first_reads_still_takes_free_leases_at_once() {
        // A slow first heartbeat write (the local store fsyncs every write)
        // answered after the first heartbeat read and the table view: the
        // balancing pass of that view was skipped (not yet renewed), so the
        // renewal itself must start one, not the next rebalance period.
        let mut w = World::with_free_shards(2);
        w.rule(0, is_hb_write, Fault::HoldAnswer, 1);
        let a = w.add_node("a", 1);
        w.run_for(secs(0.5));
        assert_eq!(w.holds(a), 0, "not renewed yet: takes nothing");
        assert!(!w.actions(a, is_read).is_empty(), "the view was read");
        w.deliver(a);
        w.run_for(secs(1.0));
        assert_eq!(w.holds(a), 2, "both free leases taken once renewed");
    }

    #[test]
    fn at_most_one_heartbeat_write_in_flight() {
        let mut w = World::new();
        let a = w.add_node("a", 1);
        // First write went through; hold every later one.
        w.rule(a, is_hb_write, Fault::HoldRequest, usize::MAX);
        w.run_until(secs(30.0));
        assert_eq!(
            w.actions(a, is_hb_write).len(),
            2,
            "one ok, one stuck in flight, none more"
        );
        assert!(w.nodes[a].mgr.is_fenced());
    }

    #[test]
    fn self_fence_deadline_counts_from_send_not_reply() {
        let mut w = World::with_free_shards(1);
        let a = w.add_node("a", 1);
        w.run_until(secs(2.0));
        assert_eq!(w.holds(a), 1);
        // The write sent at 10/3 s answers only at 8 s.
        w.rule(a, is_hb_write, Fault::HoldRequest, 1);
        w.run_until(secs(8.0));
        assert_eq!(w.actions(a, is_hb_write).len(), 2);
        w.rule(a, is_hb_write, Fault::HoldRequest, usize::MAX);
        w.deliver(a);
        let sent = Duration::from_secs(10) / 3;
        let deadline = sent + secs(9.0); // F - margin after the *send*
        w.run_until(deadline - Duration::from_millis(1));
        assert!(!w.nodes[a].mgr.is_fenced());
        assert_eq!(w.holds(a), 1);
        w.run_until(deadline);
        assert!(w.nodes[a].mgr.is_fenced());
        assert_eq!(w.holds(a), 0);
        assert_eq!(w.lost(a), vec![(deadline, sref(0), LostReason::SelfFenced)]);
        assert_eq!(
            w.nodes[a].mgr.poll_timeout().map(|(_, r)| r),
            Some("heartbeat read")
        );
    }

    #[test]
    fn ambiguous_heartbeat_does_not_renew() {
        let mut w = World::with_free_shards(1);
        let a = w.add_node("a", 1);
        w.run_until(secs(1.0));
        assert_eq!(w.holds(a), 1);
        // Every later heartbeat applies, but its answer is lost.
        w.rule(a, is_hb_write, Fault::Ambiguous, usize::MAX);
        w.run_until(secs(8.999));
        assert_eq!(w.holds(a), 1);
        w.run_until(secs(9.0));
        assert_eq!(
            w.lost(a),
            vec![(secs(9.0), sref(0), LostReason::SelfFenced)]
        );
        // No checkpoint is written while fenced.
        w.with(a, |m, now, mint| {
            m.write_checkpoint(now, &sref(0), cp(5), mint)
        });
        assert!(w.actions(a, is_checkpoint).is_empty());
    }

    #[test]
    fn self_fences_before_anyone_may_take() {
        let mut w = World::with_free_shards(4);
        let a = w.add_node("a", 1);
        let b = w.add_node("b", 1);
        w.run_until(secs(40.0));
        assert_eq!((w.holds(a), w.holds(b)), (2, 2));
        let a_shards = w.reading(a);
        let last_renew = w.nodes[a].mgr.last_renew_sent.unwrap();
        // A loses DynamoDB: every call fails; B keeps observing.
        w.nodes[a].partitioned = true;
        w.run_until(secs(80.0));
        let fenced_at: Vec<Duration> = w
            .lost(a)
            .into_iter()
            .filter(|(_, s, r)| a_shards.contains(s) && *r == LostReason::SelfFenced)
            .map(|(t, _, _)| t)
            .collect();
        assert_eq!(fenced_at.len(), 2);
        let taken_at: Vec<Duration> = w
            .acquired(b)
            .into_iter()
            .filter(|(_, s, _, _)| a_shards.contains(s))
            .map(|(t, _, _, _)| t)
            .collect();
        assert_eq!(taken_at.len(), 2);
        let last_renew_t = last_renew.duration_since(w.epoch + w.nodes[a].offset);
        for f in &fenced_at {
            assert!(*f <= last_renew_t + secs(9.0));
            for t in &taken_at {
                assert!(f < t, "fenced at {f:?}, taken at {t:?}");
            }
        }
        assert_eq!(w.holds(b), 4);
    }

    #[test]
    fn fenced_worker_takes_afresh_with_next_token() {
        let mut w = World::with_free_shards(1);
        let a = w.add_node("a", 1);
        w.run_until(secs(1.0));
        assert_eq!(w.acquired(a)[0].2, FencingToken(1));
        w.nodes[a].partitioned = true;
        w.run_until(secs(12.0));
        assert!(w.nodes[a].mgr.is_fenced());
        w.nodes[a].partitioned = false;
        w.run_until(secs(20.0));
        assert!(!w.nodes[a].mgr.is_fenced());
        let acq = w.acquired(a);
        assert_eq!(acq.len(), 2);
        // Not resumed with token 1: released (2), then taken afresh (3).
        assert_eq!(acq[1].2, FencingToken(3));
        assert_eq!(w.row(0).token, FencingToken(3));
        let writes: Vec<&LeaseWrite> = w.nodes[a]
            .actions
            .iter()
            .filter_map(|(_, a)| write_of(a))
            .collect();
        assert!(matches!(
            writes.last(),
            Some(LeaseWrite::Take {
                expect_owner: None,
                expect_token: FencingToken(2),
                ..
            })
        ));
    }

    // ----- liveness by observation -------------------------------------------

    #[test]
    fn expired_lease_judged_on_observer_clock() {
        let mut w = World::with_free_shards(4);
        let a = w.add_node("a", 1);
        w.run_until(secs(5.0));
        let b = w.add_node("b", 1);
        w.run_until(secs(35.0));
        assert_eq!((w.holds(a), w.holds(b)), (2, 2));
        // Clocks have nothing in common: origins a million seconds apart,
        // wall clocks a day apart.
        assert_ne!(w.nodes[a].offset, w.nodes[b].offset);
        let last_beat = w.actions(a, is_hb_write).last().map(|(t, _)| *t).unwrap();
        w.kill(a);
        let killed = w.t;
        w.run_until(secs(80.0));
        let takes: Vec<Duration> = w
            .actions(b, is_take)
            .into_iter()
            .filter(|(t, _)| *t > killed)
            .map(|(t, _)| t)
            .collect();
        assert_eq!(takes.len(), 2);
        for t in takes {
            assert!(
                t >= last_beat + secs(10.0),
                "taken {t:?}, beat {last_beat:?}"
            );
            assert!(t <= killed + secs(12.0), "failover took {:?}", t - killed);
        }
        assert_eq!(w.holds(b), 4);
    }

    #[test]
    fn nobody_judged_expired_before_a_successful_heartbeat_read() {
        let mut w = World::new();
        let ghost = Owner::new("ghost", 1);
        for i in 0..2 {
            let mut row = LeaseRow::new(sref(i), vec![], 1);
            row.owner = Some(ghost.clone());
            row.token = FencingToken(3);
            w.add_row(row);
        }
        w.rule(0, is_hb_read, Fault::Transient, usize::MAX);
        let b = w.add_node("b", 1);
        w.run_until(secs(60.0));
        assert!(w.actions(b, is_take).is_empty());
        assert_eq!(w.nodes[b].mgr.live_workers(), 1);
        w.clear_rules(b);
        let healed = w.t;
        w.run_until(secs(90.0));
        let takes = w.actions(b, is_take);
        assert_eq!(takes.len(), 2);
        // Absent since the first successful read: taken F after it.
        assert!(takes[0].0 >= healed + secs(10.0));
        assert!(takes[0].0 <= healed + secs(12.0));
        assert!(matches!(
            write_of(&takes[0].1),
            Some(LeaseWrite::Take { expect_owner: Some(o), expect_token: FencingToken(3), .. }) if *o == ghost
        ));
        assert_eq!(w.row(0).token, FencingToken(4));
    }

    #[test]
    fn alive_false_heartbeat_expires_at_once() {
        let mut w = World::new();
        let gone = Owner::new("gone", 7);
        w.beats.insert(
            "gone".into(),
            HeartbeatRow {
                owner: gone.clone(),
                beat: 99,
                held: 1,
                wants: vec![],
                alive: false,
            },
        );
        let mut row = LeaseRow::new(sref(0), vec![], 1);
        row.owner = Some(gone);
        row.token = FencingToken(5);
        w.add_row(row);
        let b = w.add_node("b", 1);
        w.run_until(secs(1.0));
        assert_eq!(w.acquired(b).len(), 1);
        assert_eq!(w.acquired(b)[0].0, Duration::ZERO);
        assert_eq!(w.acquired(b)[0].2, FencingToken(6));
    }

    #[test]
    fn absent_heartbeat_counts_from_first_read_that_misses_it() {
        let mut w = World::new();
        let mut row = LeaseRow::new(sref(0), vec![], 1);
        row.owner = Some(Owner::new("ghost", 1));
        row.token = FencingToken(1);
        w.add_row(row);
        w.run_for(secs(100.0)); // the ghost's row is old: irrelevant
        let b = w.add_node("b", 1);
        let start = w.t;
        w.run_until(start + secs(9.9));
        assert!(w.actions(b, is_take).is_empty());
        w.run_until(start + secs(12.0));
        let takes = w.actions(b, is_take);
        assert_eq!(takes.len(), 1);
        assert!(takes[0].0 >= start + secs(10.0));
    }

    #[test]
    fn beat_counts_from_reply_of_first_read_that_shows_it() {
        // An observer whose read answer is delayed must not age the owner
        // by the delay: the beat counts from the reply instant.
        let mut w = World::new();
        let mut row = LeaseRow::new(sref(0), vec![], 1);
        row.owner = Some(Owner::new("x", 1));
        row.token = FencingToken(1);
        w.add_row(row);
        w.beats.insert(
            "x".into(),
            HeartbeatRow {
                owner: Owner::new("x", 1),
                beat: 1,
                held: 1,
                wants: vec![],
                alive: true,
            },
        );
        // b's first heartbeat read is executed now, answered 5 s later.
        w.rule(0, is_hb_read, Fault::HoldAnswer, 1);
        let b = w.add_node("b", 1);
        w.run_until(secs(0.5)); // nothing more (read in flight)
        w.t = secs(5.0);
        w.deliver(b);
        w.run_until(secs(14.9));
        assert!(
            w.actions(b, is_take).is_empty(),
            "x seen at 5 s: not expired before 15 s"
        );
        w.run_until(secs(17.0));
        assert_eq!(w.actions(b, is_take).len(), 1);
        assert!(w.actions(b, is_take)[0].0 >= secs(15.0));
    }

    #[test]
    fn restarted_worker_takes_old_incarnation_leases_at_once_with_next_token() {
        let mut w = World::with_free_shards(2);
        let a = w.add_node("a", 1);
        w.run_until(secs(5.0));
        assert_eq!(w.holds(a), 2);
        let a = w.restart(a);
        assert_eq!(w.nodes[a].me, Owner::new("a", 2));
        let restarted = w.t;
        assert_eq!(w.holds(a), 0, "never silently resumed");
        // The later incarnation's heartbeat row tells that the earlier one
        // is dead: no need to wait for the failover time.
        w.run_until(restarted + secs(4.0));
        assert_eq!(w.holds(a), 2);
        let acquired: Vec<FencingToken> = w
            .acquired(a)
            .into_iter()
            .filter(|(t, ..)| *t >= restarted)
            .map(|(_, _, token, _)| token)
            .collect();
        assert_eq!(acquired, vec![FencingToken(2), FencingToken(2)]);
        for (_, act) in w.actions(a, is_take) {
            assert!(matches!(
                write_of(&act),
                Some(LeaseWrite::Take { expect_owner: Some(o), .. }) if *o == Owner::new("a", 1)
            ));
        }
    }

    // ----- table view, balancing -------------------------------------------

    #[test]
    fn never_takes_lease_from_itself() {
        let mut w = World::new();
        let me = Owner::new("a", 1);
        for i in 0..2 {
            let mut row = LeaseRow::new(sref(i), vec![], 1);
            row.owner = Some(me.clone());
            row.token = FencingToken(4);
            w.add_row(row);
        }
        let a = w.add_node("a", 1);
        w.run_until(secs(3.0));
        // Rows naming us that we do not hold (no ambiguous take to adopt)
        // are released, then taken like any free row.
        let writes: Vec<LeaseWrite> = w.nodes[a]
            .actions
            .iter()
            .filter_map(|(_, x)| write_of(x).cloned())
            .collect();
        assert!(matches!(
            &writes[0],
            LeaseWrite::Release {
                token: FencingToken(4),
                checkpoint: None,
                ..
            }
        ));
        assert!(matches!(
            &writes[1],
            LeaseWrite::Release {
                token: FencingToken(4),
                ..
            }
        ));
        assert!(writes[2..].iter().all(|x| matches!(
            x,
            LeaseWrite::Take {
                expect_owner: None,
                expect_token: FencingToken(5),
                ..
            }
        )));
        assert_eq!(w.holds(a), 2);
        assert_eq!(w.row(0).token, FencingToken(6));
    }

    #[test]
    fn two_workers_balance_evenly_by_graceful_handoff() {
        let mut w = World::with_free_shards(10);
        let a = w.add_node("a", 1);
        w.run_until(secs(20.0));
        assert_eq!(w.holds(a), 10);
        let b = w.add_node("b", 1);
        let joined = w.t;
        w.run_until(joined + secs(5.0));
        assert_eq!((w.holds(a), w.holds(b)), (5, 5));
        let handed: Vec<ShardRef> = w
            .lost(a)
            .into_iter()
            .filter(|(_, _, r)| *r == LostReason::HandedOff)
            .map(|(_, s, _)| s)
            .collect();
        assert_eq!(handed.len(), 5);
        for (_, shard, token, checkpoint) in w.acquired(b) {
            assert!(handed.contains(&shard));
            // Token: A's token + 1 (the transfer), checkpoint: A's final one.
            assert_eq!(token, FencingToken(2));
            assert_eq!(token, w.rows[&shard].token);
            assert_eq!(checkpoint, Some(cp(100)));
        }
        assert!(w.actions(b, is_take).is_empty(), "no force needed");
        // Stable afterwards.
        w.run_until(joined + secs(200.0));
        assert_eq!((w.holds(a), w.holds(b)), (5, 5));
        assert!(w.nodes[b].mgr.requests.is_empty());
        assert!(w.beats["b"].wants.is_empty());
    }

    #[test]
    fn handoff_request_reaches_owner_through_heartbeat_wants() {
        let mut w = World::with_free_shards(2);
        let a = w.add_node("a", 1);
        w.run_until(secs(10.0));
        w.nodes[a].auto_transfer = false;
        let b = w.add_node("b", 1);
        w.run_until(secs(10.0));
        let req_at = w
            .actions(b, |x| {
                matches!(write_of(x), Some(LeaseWrite::RequestHandoff { .. }))
            })
            .into_iter()
            .map(|(t, _)| t)
            .collect::<Vec<_>>();
        assert_eq!(req_at, vec![secs(10.0)]);
        // The heartbeat carrying `wants` was written at once.
        let wants_beat = w
            .actions(b, is_hb_write)
            .into_iter()
            .find(|(_, x)| matches!(x, Action::WriteHeartbeat { row, .. } if !row.wants.is_empty()))
            .unwrap();
        assert_eq!(wants_beat.0, secs(10.0));
        w.run_until(secs(11.5));
        let asked: Vec<(Duration, ShardRef, Owner)> = w
            .events(a)
            .filter_map(|(t, e)| match e {
                LeaseEvent::HandoffRequested { shard, to } => Some((*t, shard.clone(), to.clone())),
                _ => None,
            })
            .collect();
        assert_eq!(asked.len(), 1);
        assert!(asked[0].0 <= secs(11.0), "within one heartbeat read");
        assert_eq!(asked[0].2, Owner::new("b", 1));
        // Emitted once, however many reads still show the request.
        w.run_until(secs(15.0));
        assert_eq!(
            w.events(a)
                .filter(|(_, e)| matches!(e, LeaseEvent::HandoffRequested { .. }))
                .count(),
            1
        );
    }

    #[test]
    fn balancing_takes_whole_deficit_in_one_pass() {
        let mut w = World::with_free_shards(8);
        let a = w.add_node("a", 1);
        w.run_until(secs(10.0));
        assert_eq!(w.holds(a), 8);
        let b = w.add_node("b", 1);
        w.run_until(secs(10.0));
        // All four requests at the same instant, in one pass.
        let reqs = w.actions(b, |x| {
            matches!(write_of(x), Some(LeaseWrite::RequestHandoff { .. }))
        });
        assert_eq!(reqs.len(), 4);
        assert!(reqs.iter().all(|(t, _)| *t == secs(10.0)));
        let mut shards = BTreeSet::new();
        for (_, x) in &reqs {
            let Some(LeaseWrite::RequestHandoff {
                shard,
                owner,
                token,
                pending,
            }) = write_of(x)
            else {
                unreachable!()
            };
            assert_eq!(owner, &Owner::new("a", 1));
            assert_eq!(pending, &Owner::new("b", 1));
            assert_eq!(*token, FencingToken(1));
            assert!(shards.insert(shard.clone()), "two requests for one shard");
        }
        w.run_until(secs(14.0));
        assert_eq!((w.holds(a), w.holds(b)), (4, 4));
    }

    #[test]
    fn asks_most_loaded_workers_first() {
        let mut w = World::new();
        for i in 0..12 {
            let mut row = LeaseRow::new(sref(i), vec![], 1);
            row.owner = Some(Owner::new(if i < 7 { "a" } else { "b" }, 1));
            row.token = FencingToken(1);
            w.add_row(row);
        }
        let rows: Vec<LeaseRow> = w.rows.values().cloned().collect();
        let holding = |name: &'static str| {
            let rows = rows.clone();
            move |m: &mut LeaseManager| {
                for r in &rows {
                    if r.owner == Some(Owner::new(name, 1)) {
                        m.acquire(r);
                    } else {
                        // Keep a and b from balancing among themselves.
                        m.quarantine(&r.shard, m.start + Duration::from_secs(3600));
                    }
                }
            }
        };
        let a = w.add_node_with("a", 1, holding("a"));
        let b = w.add_node_with("b", 1, holding("b"));
        w.run_until(secs(5.0));
        assert_eq!((w.holds(a), w.holds(b)), (7, 5));
        let c = w.add_node("c", 1);
        w.run_until(secs(5.0));
        let owners: Vec<Owner> = w
            .actions(c, |x| {
                matches!(write_of(x), Some(LeaseWrite::RequestHandoff { .. }))
            })
            .into_iter()
            .map(|(_, x)| match write_of(&x) {
                Some(LeaseWrite::RequestHandoff { owner, .. }) => owner.clone(),
                _ => unreachable!(),
            })
            .collect();
        // target = ceil(12 / 3) = 4: a (7) gives 3, b (5) gives 1; most
        // loaded first, ties in owner order.
        let (oa, ob) = (Owner::new("a", 1), Owner::new("b", 1));
        assert_eq!(owners, vec![oa.clone(), oa.clone(), oa, ob]);
        w.run_until(secs(10.0));
        assert_eq!((w.holds(a), w.holds(b), w.holds(c)), (4, 4, 4));
    }

    #[test]
    fn killed_worker_leases_taken_after_failover_time() {
        let mut w = World::with_free_shards(6);
        let a = w.add_node("a", 1);
        let b = w.add_node("b", 1);
        w.run_until(secs(40.0));
        assert_eq!((w.holds(a), w.holds(b)), (3, 3));
        w.kill(a);
        let killed = w.t;
        w.run_until(killed + secs(9.0));
        assert_eq!(w.holds(b), 3);
        w.run_until(killed + secs(12.0));
        assert_eq!(w.holds(b), 6, "failover within F + 2 s");
        for (t, shard, token, _) in w.acquired(b).into_iter().filter(|(t, ..)| *t > killed) {
            assert!(t >= killed + secs(10.0) - Duration::from_secs(10) / 3);
            assert_eq!(token, w.rows[&shard].token);
        }
    }

    #[test]
    fn forced_take_after_handoff_timeout_is_conditional_on_observed_token() {
        let mut w = World::with_free_shards(2);
        w.strict = false; // the owner keeps reading until it learns
        let a = w.add_node("a", 1);
        w.run_until(secs(5.0));
        w.nodes[a].auto_transfer = false; // a stuck sink: never hands over
        let b = w.add_node("b", 1);
        w.run_until(secs(5.0));
        let req = w.actions(b, |x| {
            matches!(write_of(x), Some(LeaseWrite::RequestHandoff { .. }))
        });
        let Some(LeaseWrite::RequestHandoff { shard, token, .. }) = write_of(&req[0].1).cloned()
        else {
            unreachable!()
        };
        w.run_until(secs(24.9));
        assert!(
            w.actions(b, is_take).is_empty(),
            "not before 2 x handoff_timeout"
        );
        w.run_until(secs(26.5));
        let takes = w.actions(b, is_take);
        assert_eq!(takes.len(), 1);
        assert!(takes[0].0 >= secs(25.0));
        assert_eq!(
            write_of(&takes[0].1),
            Some(&LeaseWrite::Take {
                shard: shard.clone(),
                expect_owner: Some(Owner::new("a", 1)),
                expect_token: token,
                to: Owner::new("b", 1),
            })
        );
        assert_eq!(w.nodes[b].mgr.token(&shard), Some(token.next()));
        assert!(w.nodes[b].mgr.requests.is_empty());
        // The deposed owner learns at its next conditional write.
        w.with(a, |m, now, mint| {
            m.write_checkpoint(now, &shard, cp(7), mint)
        });
        assert_eq!(
            w.lost(a).last().map(|(_, s, r)| (s.clone(), *r)),
            Some((shard.clone(), LostReason::Taken))
        );
        assert_ne!(w.rows[&shard].checkpoint, Some(cp(7)));
    }

    #[test]
    fn taker_drops_request_when_row_changes_otherwise() {
        let mut w = World::with_free_shards(2);
        let a = w.add_node("a", 1);
        w.run_until(secs(5.0));
        w.nodes[a].auto_transfer = false;
        let b = w.add_node("b", 1);
        w.run_until(secs(5.0));
        let shard = w.nodes[b].mgr.requests.keys().next().cloned().unwrap();
        w.run_until(secs(6.5));
        assert_eq!(w.beats["b"].wants, vec![shard.clone()]);
        // The owner releases instead (e.g. a fatal shard error).
        w.with(a, |m, now, mint| m.release(now, &shard, Some(cp(3)), mint));
        w.run_until(secs(8.0));
        assert!(w.nodes[b].mgr.requests.is_empty());
        // Free now: taken the plain way, no force.
        assert_eq!(w.nodes[b].mgr.token(&shard), Some(FencingToken(3)));
        assert!(matches!(
            write_of(&w.actions(b, is_take)[0].1),
            Some(LeaseWrite::Take {
                expect_owner: None,
                ..
            })
        ));
        assert_eq!(w.acquired(b)[0].3, Some(cp(3)));
        assert!(w.beats["b"].wants.is_empty());
    }

    #[test]
    fn transfer_refused_reports_taken() {
        let mut w = World::with_free_shards(2);
        w.strict = false;
        let a = w.add_node("a", 1);
        w.run_until(secs(5.0));
        w.nodes[a].auto_transfer = false;
        let _b = w.add_node("b", 1);
        w.run_until(secs(7.0));
        let (shard, to) = w
            .events(a)
            .find_map(|(_, e)| match e {
                LeaseEvent::HandoffRequested { shard, to } => Some((shard.clone(), to.clone())),
                _ => None,
            })
            .unwrap();
        assert_eq!(to, Owner::new("b", 1));
        // Someone else moved the row meanwhile.
        let row = w.rows.get_mut(&shard).unwrap();
        row.owner = Some(Owner::new("z", 1));
        row.token = row.token.next();
        row.pending_owner = None;
        w.with(a, |m, now, mint| m.transfer(now, &shard, Some(cp(9)), mint));
        assert_eq!(
            w.lost(a).last().map(|(_, s, r)| (s.clone(), *r)),
            Some((shard, LostReason::Taken))
        );
    }

    #[test]
    fn held_lease_taken_behind_our_back_is_lost_at_next_table_read() {
        let mut w = World::with_free_shards(1);
        w.strict = false;
        let a = w.add_node("a", 1);
        w.run_until(secs(1.0));
        let row = w.rows.get_mut(&sref(0)).unwrap();
        row.owner = Some(Owner::new("z", 1));
        row.token = FencingToken(2);
        w.run_until(secs(31.0));
        assert_eq!(w.lost(a), vec![(secs(30.0), sref(0), LostReason::Taken)]);
    }

    #[test]
    fn stale_table_read_does_not_undo_own_take() {
        let mut w = World::with_free_shards(1);
        let a = w.add_node("a", 1);
        // First read and the take both executed now, answered later, in
        // the order: take answer, then a second, older-than-it read.
        w.run_until(secs(1.0));
        assert_eq!(w.holds(a), 1);
        w.rule(a, is_checkpoint, Fault::HoldRequest, 1);
        w.with(a, |m, now, mint| {
            m.write_checkpoint(now, &sref(0), cp(1), mint)
        });
        // A table read sent before the checkpoint answer, answered after.
        w.rule(a, is_read, Fault::HoldAnswer, 1);
        // Someone else's history is irrelevant: only order matters.
        w.run_until(secs(30.0));
        let stashed = std::mem::take(&mut w.nodes[a].stash);
        assert_eq!(stashed.len(), 2);
        // Deliver the checkpoint answer first, then the read.
        let mut order: Vec<Stashed> = stashed;
        order.sort_by_key(|s| matches!(s, Stashed::Answer(_)));
        w.nodes[a].stash = order;
        // Make the stale read show a row without our checkpoint and a
        // stale owner: it must not override what the answer taught.
        if let Some(Stashed::Answer(Input::Leases {
            result: Ok(rows), ..
        })) = w.nodes[a].stash.last_mut()
        {
            rows[0].checkpoint = None;
        }
        w.deliver(a);
        assert_eq!(w.holds(a), 1);
        assert!(w.lost(a).is_empty());
        let view: Vec<&LeaseRow> = w.nodes[a].mgr.table(&stream()).collect();
        assert_eq!(view[0].checkpoint, Some(cp(1)));
    }

    #[test]
    fn ambiguous_take_adopted_at_next_table_read() {
        let mut w = World::with_free_shards(1);
        w.rule(0, is_take, Fault::Ambiguous, 1);
        let a = w.add_node("a", 1);
        w.run_until(secs(0.5));
        // Applied, answer lost: adopted after an immediate re-read.
        assert_eq!(w.acquired(a).len(), 1);
        assert_eq!(w.acquired(a)[0].2, FencingToken(1));
        assert_eq!(w.actions(a, is_take).len(), 1);
        assert!(w.actions(a, is_release).is_empty());
    }

    #[test]
    fn lost_take_request_is_not_adopted_and_retaken() {
        let mut w = World::with_free_shards(1);
        w.rule(0, is_take, Fault::LostRequest, 1);
        let a = w.add_node("a", 1);
        w.run_until(secs(0.5));
        // Not applied: the re-read shows a free row, taken again.
        assert_eq!(w.actions(a, is_take).len(), 2);
        assert_eq!(w.acquired(a).len(), 1);
        assert_eq!(w.acquired(a)[0].2, FencingToken(1));
    }

    /// Kinesin-sim (swarm seeds 78, 116, 138, 245; perf64 seed 0): a take
    /// or create refused by its condition was sent again at once, because
    /// a table read sent before the refusal still showed the old row; the
    /// second write was refused too, and a refused write costs a write unit.
    #[test]
    fn refused_write_is_not_repeated_on_a_read_sent_before_the_refusal() {
        let mut w = World::with_free_shards(1);
        // The first take waits in the network; a read sent meanwhile sees
        // the row free but is answered only after the take.
        w.rule(0, is_take, Fault::HoldRequest, 1);
        let a = w.add_node("a", 1);
        assert_eq!(w.actions(a, is_take).len(), 1);
        w.rule(a, is_read, Fault::HoldAnswer, 1);
        w.with(a, |m, now, _| m.read_now(&stream(), now));
        w.fire(a);
        // Someone else takes the lease before our take lands.
        {
            let row = w.rows.get_mut(&sref(0)).unwrap();
            row.owner = Some(Owner::new("z", 1));
            row.token = FencingToken(1);
        }
        w.deliver(a);
        assert_eq!(w.nodes[a].mgr.stats().conditional_failures, 1);
        assert_eq!(
            w.actions(a, is_take).len(),
            1,
            "no second take on the stale read"
        );
        // A read sent after the refusal shows the new owner: nothing to do.
        w.run_for(secs(40.0));
        assert_eq!(w.nodes[a].mgr.stats().conditional_failures, 1);
    }

    #[test]
    fn take_refused_means_someone_else_won() {
        let mut w = World::with_free_shards(1);
        let a = w.add_node("a", 1);
        let b = w.add_node("b", 1);
        w.run_until(secs(3.0));
        // Both raced for the free row; exactly one holds it.
        assert_eq!(w.holds(a) + w.holds(b), 1);
        assert_eq!(w.row(0).token, FencingToken(1));
    }

    // ----- resharding ------------------------------------------------------

    fn info(i: usize, parents: &[usize], closed: bool) -> ShardInfo {
        ShardInfo {
            shard: sid(i),
            parents: parents.iter().map(|p| sid(*p)).collect(),
            hash_range: HashRange::FULL,
            ending_seq: closed.then(|| SeqNum::parse("900").unwrap()),
        }
    }

    #[test]
    fn creates_rows_only_for_shards_missing_from_view() {
        let mut w = World::with_free_shards(1);
        let a = w.add_node("a", 1);
        w.run_until(secs(1.0));
        let shards = [
            info(0, &[], true),
            info(1, &[0], false),
            info(2, &[0], false),
        ];
        w.with(a, |m, now, mint| {
            m.handle_shards(now, &stream(), &shards, mint)
        });
        let creates: Vec<LeaseRow> = w.nodes[a]
            .actions
            .iter()
            .filter_map(|(_, x)| match write_of(x) {
                Some(LeaseWrite::Create(row)) => Some(row.clone()),
                _ => None,
            })
            .collect();
        assert_eq!(creates.len(), 2);
        assert_eq!(creates[0].shard, sref(1));
        assert_eq!(creates[0].parents, vec![sid(0)]);
        assert_eq!(creates[0].owner, None);
        // Wall clock: the node's unix_ms at start plus elapsed.
        assert_eq!(creates[0].created_ms, 1_700_000_000_000 + 1_000);
        // Again: nothing to create.
        w.with(a, |m, now, mint| {
            m.handle_shards(now, &stream(), &shards, mint)
        });
        assert_eq!(w.nodes[a].mgr.stats().other_lease_writes, 3);
    }

    fn creates(w: &World, i: usize) -> Vec<ShardRef> {
        w.actions(i, |x| matches!(write_of(x), Some(LeaseWrite::Create(_))))
            .iter()
            .filter_map(|(_, x)| write_of(x).map(|w| w.shard().clone()))
            .collect()
    }

    /// A fleet that starts together on an empty table creates each row
    /// once: one designated creator per row, not every worker racing on
    /// every row (about nine refused creates per shard before, in the
    /// simulator's cost scenarios).
    #[test]
    fn fleet_starting_together_creates_each_row_once() {
        let mut w = World::new();
        let infos: Vec<ShardInfo> = (0..24).map(|i| info(i, &[], false)).collect();
        let nodes: Vec<usize> = (0..4).map(|i| w.add_node(&format!("w{i}"), 1)).collect();
        for &i in &nodes {
            w.with(i, |m, now, mint| {
                m.handle_shards(now, &stream(), &infos, mint)
            });
        }
        w.run_until(secs(10.0));
        let mut all: Vec<ShardRef> = nodes.iter().flat_map(|&i| creates(&w, i)).collect();
        all.sort();
        let expected: Vec<ShardRef> = (0..24).map(sref).collect();
        assert_eq!(all, expected, "every row created, each once");
        assert!(
            nodes.iter().all(|&i| !creates(&w, i).is_empty()),
            "spread over the fleet"
        );
        let refused: u64 = nodes
            .iter()
            .map(|&i| w.nodes[i].mgr.stats().conditional_failures)
            .sum();
        assert!(refused <= 4, "{refused} refused writes");
        let held: usize = nodes.iter().map(|&i| w.holds(i)).sum();
        assert_eq!(held, 24);
        assert!(
            nodes.iter().all(|&i| w.holds(i) == 6),
            "balanced from the start"
        );
    }

    /// The designated creator of a row may be dead (its heartbeat still
    /// looks fresh): the others create the row once it is overdue.
    #[test]
    fn missing_row_is_created_when_its_designated_creator_never_does() {
        let mut w = World::new();
        // A worker that looks alive but never acts.
        w.beats.insert(
            "d".into(),
            HeartbeatRow {
                owner: Owner::new("d", 1),
                beat: 1,
                held: 0,
                wants: Vec::new(),
                alive: true,
            },
        );
        let infos: Vec<ShardInfo> = (0..8).map(|i| info(i, &[], false)).collect();
        let a = w.add_node("a", 1);
        w.with(a, |m, now, mint| {
            m.handle_shards(now, &stream(), &infos, mint)
        });
        w.run_until(secs(1.5));
        let first = creates(&w, a).len();
        assert!(
            0 < first && first < 8,
            "only a's own rows at first: {first}"
        );
        w.run_until(secs(5.0));
        assert_eq!(creates(&w, a).len(), 8, "the rest once overdue");
        assert_eq!(w.rows.len(), 8);
    }

    /// Fuzz worker (CI, stop 8): a worker shutting down while rows are
    /// deferred to a silent designated creator read the lease table again
    /// the moment each read was answered, and never finished shutting down.
    #[test]
    fn shutdown_with_rows_deferred_to_another_creator_does_not_spin_reads() {
        let mut w = World::new();
        w.beats.insert(
            "d".into(),
            HeartbeatRow {
                owner: Owner::new("d", 1),
                beat: 1,
                held: 0,
                wants: Vec::new(),
                alive: true,
            },
        );
        let infos: Vec<ShardInfo> = (0..8).map(|i| info(i, &[], false)).collect();
        let a = w.add_node("a", 1);
        w.with(a, |m, now, mint| {
            m.handle_shards(now, &stream(), &infos, mint)
        });
        w.run_until(secs(1.5));
        let created = creates(&w, a).len();
        assert!(created < 8, "some rows deferred to d: {created}");
        w.with(a, |m, now, mint| m.shutdown(now, mint));
        let reads_before = w.actions(a, is_read).len();
        w.run_until(secs(20.0));
        let reads = w.actions(a, is_read).len() - reads_before;
        assert!(reads <= 20, "{reads} lease reads in 18.5 s of shutdown");
        let held: Vec<ShardRef> = w.reading(a).into_iter().collect();
        for s in &held {
            w.with(a, |m, now, mint| m.release(now, s, None, mint));
        }
        w.run_until(secs(25.0));
        assert!(w.nodes[a].mgr.is_shut_down());
        assert_eq!(
            creates(&w, a).len(),
            created,
            "nothing created after shutdown"
        );
    }

    /// The checker the worker and the simulator rely on does fail: each
    /// corruption of a healthy manager is reported (cargo-mutants showed
    /// `check_invariants -> Ok(())` surviving every test before).
    #[test]
    fn check_invariants_reports_each_corruption() {
        let healthy = || {
            let mut w = World::with_free_shards(2);
            let a = w.add_node("a", 1);
            w.run_until(secs(5.0));
            assert_eq!(w.holds(a), 2);
            assert_eq!(w.nodes[a].mgr.check_invariants(), Ok(()));
            (w, a)
        };
        let held: ShardRef = {
            let (w, a) = healthy();
            w.nodes[a].mgr.held.keys().next().unwrap().clone()
        };
        let request = Request {
            owner: Owner::new("b", 1),
            token: FencingToken(1),
            state: RequestState::Sending,
            confirmed: false,
        };
        type Corrupt = Box<dyn Fn(&mut LeaseManager)>;
        let corruptions: Vec<(&str, Corrupt)> = vec![
            ("fenced", Box::new(|m| m.fenced = true)),
            (
                "held and requested",
                Box::new({
                    let (held, request) = (held.clone(), request.clone());
                    move |m| {
                        m.requests.insert(held.clone(), request.clone());
                    }
                }),
            ),
            (
                "token 0",
                Box::new({
                    let held = held.clone();
                    move |m| m.held.get_mut(&held).unwrap().token = FencingToken(0)
                }),
            ),
            (
                "from ourselves",
                Box::new({
                    let request = request.clone();
                    move |m| {
                        let mut r = request.clone();
                        r.owner = m.me.clone();
                        m.requests.insert(sref(9), r);
                    }
                }),
            ),
            (
                "unknown op",
                Box::new(|m| {
                    m.busy.insert(sref(9), OpId::from_raw(999_999));
                }),
            ),
            (
                "write of another shard",
                Box::new(|m| {
                    let op = OpId::from_raw(999_998);
                    m.ops.insert(
                        op,
                        Op::WriteLease {
                            write: LeaseWrite::Create(LeaseRow::new(sref(8), vec![], 0)),
                            kind: WriteKind::Create,
                            base: Box::new(None),
                        },
                    );
                    m.busy.insert(sref(9), op);
                }),
            ),
            (
                "write without busy shard",
                Box::new(|m| {
                    m.ops.insert(
                        OpId::from_raw(999_997),
                        Op::WriteLease {
                            write: LeaseWrite::Create(LeaseRow::new(sref(8), vec![], 0)),
                            kind: WriteKind::Create,
                            base: Box::new(None),
                        },
                    );
                }),
            ),
        ];
        for (what, corrupt) in corruptions {
            let (mut w, a) = healthy();
            corrupt(&mut w.nodes[a].mgr);
            assert!(
                w.nodes[a].mgr.check_invariants().is_err(),
                "{what}: not reported"
            );
        }
    }

    #[test]
    fn no_create_before_the_first_table_view() {
        let mut w = World::new();
        w.rule(0, is_read, Fault::Transient, usize::MAX);
        let a = w.add_node("a", 1);
        w.with(a, |m, now, mint| {
            m.handle_shards(now, &stream(), &[info(0, &[], false)], mint)
        });
        w.run_until(secs(10.0));
        assert!(w.nodes[a]
            .actions
            .iter()
            .all(|(_, x)| write_of(x).is_none()));
        w.clear_rules(a);
        w.run_until(secs(12.0));
        assert!(matches!(
            write_of(
                &w.nodes[a]
                    .actions
                    .iter()
                    .find(|(_, x)| write_of(x).is_some())
                    .unwrap()
                    .1
            ),
            Some(LeaseWrite::Create(_))
        ));
        assert_eq!(w.holds(a), 1);
    }

    #[test]
    fn child_not_taken_before_parents_reach_shard_end() {
        let mut w = World::with_free_shards(1);
        let a = w.add_node("a", 1);
        w.run_until(secs(1.0));
        let shards = [
            info(0, &[], true),
            info(1, &[0], false),
            info(2, &[0], false),
        ];
        w.with(a, |m, now, mint| {
            m.handle_shards(now, &stream(), &shards, mint)
        });
        w.run_until(secs(100.0));
        assert_eq!(w.reading(a), BTreeSet::from([sref(0)]));
        assert!(w.acquired(a).iter().all(|(_, s, ..)| *s == sref(0)));
        // Drained: SHARD_END and release in one write; children at once.
        w.with(a, |m, now, mint| m.finish_shard(now, &sref(0), mint));
        assert_eq!(w.row(0).checkpoint, Some(Checkpoint::ShardEnd));
        assert_eq!(w.row(0).owner, None);
        let ev: Vec<LeaseEvent> = w.events(a).map(|(_, e)| e.clone()).collect();
        let n = ev.len();
        assert!(ev[n - 4..].contains(&LeaseEvent::CheckpointWritten {
            shard: sref(0),
            checkpoint: Checkpoint::ShardEnd
        }));
        assert!(ev[n - 4..].contains(&LeaseEvent::Lost {
            shard: sref(0),
            token: FencingToken(1),
            reason: LostReason::ShardEnded
        }));
        assert_eq!(w.reading(a), BTreeSet::from([sref(1), sref(2)]));
        let first_child_take = w
            .actions(a, is_take)
            .into_iter()
            .find(|(_, x)| write_of(x).map(|x| x.shard()) != Some(&sref(0)))
            .unwrap();
        assert_eq!(first_child_take.0, secs(100.0));
    }

    #[test]
    fn merged_child_waits_for_both_parents() {
        let mut w = World::new();
        let mut p0 = LeaseRow::new(sref(0), vec![], 1);
        p0.checkpoint = Some(Checkpoint::ShardEnd);
        w.add_row(p0);
        let mut p1 = LeaseRow::new(sref(1), vec![], 1);
        p1.owner = Some(Owner::new("x", 1));
        p1.token = FencingToken(1);
        w.add_row(p1);
        w.beats.insert(
            "x".into(),
            HeartbeatRow {
                owner: Owner::new("x", 1),
                beat: 1,
                held: 1,
                wants: vec![],
                alive: true,
            },
        );
        w.add_row(LeaseRow::new(sref(2), vec![sid(0), sid(1)], 1));
        let a = w.add_node("a", 1);
        w.with(a, |m, now, mint| {
            m.handle_shards(
                now,
                &stream(),
                &[
                    info(0, &[], true),
                    info(1, &[], true),
                    info(2, &[0, 1], false),
                ],
                mint,
            )
        });
        w.run_until(secs(5.0));
        assert!(w.actions(a, is_take).is_empty());
        assert!(w.nodes[a]
            .actions
            .iter()
            .all(|(_, x)| !matches!(write_of(x), Some(LeaseWrite::RequestHandoff { .. }))));
    }

    #[test]
    fn trimmed_parent_counts_as_ended_once_listed() {
        let mut w = World::new();
        w.add_row(LeaseRow::new(sref(5), vec![sid(4)], 1));
        let a = w.add_node("a", 1);
        w.run_until(secs(20.0));
        assert_eq!(w.holds(a), 0, "parent unknown before ListShards: wait");
        // ListShards no longer returns the parent, nor has the table a row.
        w.with(a, |m, now, mint| {
            m.handle_shards(now, &stream(), &[info(5, &[4], false)], mint)
        });
        w.run_until(secs(31.0));
        assert_eq!(w.reading(a), BTreeSet::from([sref(5)]));
    }

    #[test]
    fn child_shards_fast_path_creates_rows_at_once() {
        let mut w = World::with_free_shards(1);
        let a = w.add_node("a", 1);
        w.run_until(secs(1.0));
        let children = [
            ChildShard {
                shard: sid(1),
                parents: vec![sid(0)],
                hash_range: HashRange::FULL,
            },
            ChildShard {
                shard: sid(2),
                parents: vec![sid(0)],
                hash_range: HashRange::FULL,
            },
        ];
        w.with(a, |m, now, mint| {
            m.handle_child_shards(now, &stream(), &children, mint)
        });
        assert_eq!(w.rows[&sref(1)].parents, vec![sid(0)]);
        assert_eq!(w.rows[&sref(2)].parents, vec![sid(0)]);
        w.with(a, |m, now, mint| m.finish_shard(now, &sref(0), mint));
        assert_eq!(w.reading(a), BTreeSet::from([sref(1), sref(2)]));
    }

    // ----- checkpoints -----------------------------------------------------

    #[test]
    fn checkpoint_write_is_conditional_on_owner_and_token() {
        let mut w = World::with_free_shards(1);
        let a = w.add_node("a", 1);
        w.run_until(secs(1.0));
        w.with(a, |m, now, mint| {
            m.write_checkpoint(now, &sref(0), cp(42), mint)
        });
        let writes = w.actions(a, is_checkpoint);
        assert_eq!(
            write_of(&writes[0].1),
            Some(&LeaseWrite::Checkpoint {
                shard: sref(0),
                owner: Owner::new("a", 1),
                token: FencingToken(1),
                checkpoint: cp(42),
            })
        );
        assert_eq!(w.row(0).checkpoint, Some(cp(42)));
        assert!(w.events(a).any(|(_, e)| *e
            == LeaseEvent::CheckpointWritten {
                shard: sref(0),
                checkpoint: cp(42)
            }));
        assert_eq!(w.nodes[a].mgr.stats().checkpoint_writes, 1);
    }

    #[test]
    fn one_checkpoint_write_in_flight_newest_sent_next() {
        let mut w = World::with_free_shards(1);
        let a = w.add_node("a", 1);
        w.run_until(secs(1.0));
        w.rule(a, is_checkpoint, Fault::HoldRequest, 1);
        for n in [1, 2, 3, 2] {
            w.with(a, |m, now, mint| {
                m.write_checkpoint(now, &sref(0), cp(n), mint)
            });
        }
        assert_eq!(w.actions(a, is_checkpoint).len(), 1);
        w.deliver(a);
        let sent: Vec<Checkpoint> = w
            .actions(a, is_checkpoint)
            .into_iter()
            .filter_map(|(_, x)| match write_of(&x) {
                Some(LeaseWrite::Checkpoint { checkpoint, .. }) => Some(checkpoint.clone()),
                _ => None,
            })
            .collect();
        assert_eq!(sent, vec![cp(1), cp(3)]);
        assert_eq!(w.row(0).checkpoint, Some(cp(3)));
        // Backwards or equal: ignored.
        w.with(a, |m, now, mint| {
            m.write_checkpoint(now, &sref(0), cp(3), mint)
        });
        w.with(a, |m, now, mint| {
            m.write_checkpoint(now, &sref(0), cp(2), mint)
        });
        assert_eq!(w.actions(a, is_checkpoint).len(), 2);
    }

    #[test]
    fn failed_checkpoint_is_written_when_asked_again() {
        let mut w = World::with_free_shards(1);
        let a = w.add_node("a", 1);
        w.run_until(secs(1.0));
        w.rule(a, is_checkpoint, Fault::Transient, 1);
        w.with(a, |m, now, mint| {
            m.write_checkpoint(now, &sref(0), cp(5), mint)
        });
        assert!(!w
            .events(a)
            .any(|(_, e)| matches!(e, LeaseEvent::CheckpointWritten { .. })));
        assert_eq!(w.holds(a), 1);
        w.with(a, |m, now, mint| {
            m.write_checkpoint(now, &sref(0), cp(5), mint)
        });
        assert_eq!(w.row(0).checkpoint, Some(cp(5)));
    }

    #[test]
    fn checkpoint_refused_means_lease_taken() {
        let mut w = World::with_free_shards(1);
        w.strict = false;
        let a = w.add_node("a", 1);
        w.run_until(secs(1.0));
        let row = w.rows.get_mut(&sref(0)).unwrap();
        row.owner = Some(Owner::new("z", 1));
        row.token = FencingToken(2);
        w.with(a, |m, now, mint| {
            m.write_checkpoint(now, &sref(0), cp(5), mint)
        });
        assert_eq!(w.lost(a), vec![(secs(1.0), sref(0), LostReason::Taken)]);
        assert_eq!(w.nodes[a].mgr.stats().conditional_failures, 1);
        w.with(a, |m, now, mint| {
            m.write_checkpoint(now, &sref(0), cp(6), mint)
        });
        assert_eq!(
            w.actions(a, is_checkpoint).len(),
            1,
            "nothing for a lost lease"
        );
    }

    #[test]
    fn checkpoint_asked_during_handoff_rides_on_the_transfer() {
        let mut w = World::with_free_shards(2);
        let a = w.add_node("a", 1);
        w.run_until(secs(5.0));
        w.nodes[a].auto_transfer = false;
        let b = w.add_node("b", 1);
        w.run_until(secs(7.0));
        let shard = w
            .events(a)
            .find_map(|(_, e)| match e {
                LeaseEvent::HandoffRequested { shard, .. } => Some(shard.clone()),
                _ => None,
            })
            .unwrap();
        w.rule(a, is_checkpoint, Fault::HoldRequest, 1);
        w.with(a, |m, now, mint| {
            m.write_checkpoint(now, &shard, cp(10), mint)
        });
        w.with(a, |m, now, mint| {
            m.write_checkpoint(now, &shard, cp(20), mint)
        });
        w.with(a, |m, now, mint| m.transfer(now, &shard, None, mint));
        // Serialized: nothing more while the checkpoint is in flight.
        assert_eq!(w.nodes[a].mgr.busy.len(), 1);
        w.deliver(a);
        assert_eq!(w.rows[&shard].owner, Some(Owner::new("b", 1)));
        assert_eq!(w.rows[&shard].checkpoint, Some(cp(20)));
        w.run_until(secs(9.0));
        assert_eq!(w.nodes[b].mgr.token(&shard), Some(FencingToken(2)));
        assert_eq!(w.acquired(b)[0].3, Some(cp(20)));
    }

    // ----- giving leases up ------------------------------------------------

    #[test]
    fn ambiguous_release_resolved_by_table_read() {
        let mut w = World::with_free_shards(2);
        let a = w.add_node("a", 1);
        w.run_until(secs(1.0));
        w.rule(a, is_release, Fault::Ambiguous, 1);
        w.rule(a, is_release, Fault::LostRequest, 1);
        w.quarantine_all(a);
        w.with(a, |m, now, mint| {
            m.release(now, &sref(0), Some(cp(4)), mint)
        });
        w.with(a, |m, now, mint| {
            m.release(now, &sref(1), Some(cp(8)), mint)
        });
        w.run_until(secs(3.0));
        let lost = w.lost(a);
        assert_eq!(lost.len(), 2);
        assert!(lost.iter().all(|(_, _, r)| *r == LostReason::Released));
        // Applied once, never twice: tokens 1 -> 2.
        assert_eq!(
            (w.row(0).token, w.row(1).token),
            (FencingToken(2), FencingToken(2))
        );
        assert_eq!(
            (w.row(0).checkpoint.clone(), w.row(1).checkpoint.clone()),
            (Some(cp(4)), Some(cp(8)))
        );
        assert_eq!(
            w.actions(a, is_release).len(),
            3,
            "only the unapplied one is sent again"
        );
    }

    impl World {
        fn quarantine_all(&mut self, i: usize) {
            let until = self.now(i) + Duration::from_secs(3600);
            for s in self.rows.keys().cloned().collect::<Vec<_>>() {
                self.nodes[i].mgr.quarantine(&s, until);
            }
        }
    }

    #[test]
    fn transient_final_write_is_retried() {
        let mut w = World::with_free_shards(1);
        let a = w.add_node("a", 1);
        w.run_until(secs(1.0));
        w.rule(a, is_release, Fault::Transient, 2);
        w.with(a, |m, now, mint| m.finish_shard(now, &sref(0), mint));
        assert_eq!(w.holds(a), 1);
        w.run_until(secs(4.0));
        assert_eq!(
            w.lost(a),
            vec![(secs(3.0), sref(0), LostReason::ShardEnded)]
        );
        assert_eq!(w.row(0).checkpoint, Some(Checkpoint::ShardEnd));
    }

    #[test]
    fn quarantined_shard_not_taken_until_expiry() {
        let mut w = World::with_free_shards(1);
        let a = w.add_node("a", 1);
        w.run_until(secs(1.0));
        let until = w.now(a) + Duration::from_secs(45);
        w.with(a, |m, now, mint| {
            m.quarantine(&sref(0), until);
            m.release(now, &sref(0), Some(cp(2)), mint);
        });
        assert_eq!(w.lost(a), vec![(secs(1.0), sref(0), LostReason::Released)]);
        w.run_until(secs(45.0));
        assert_eq!(w.holds(a), 0);
        w.run_until(secs(61.0));
        let acq = w.acquired(a);
        assert_eq!(acq.len(), 2);
        assert_eq!(
            acq[1].0,
            secs(60.0),
            "at the first table read after the quarantine"
        );
        assert_eq!(acq[1].3, Some(cp(2)));
    }

    #[test]
    fn shutdown_releases_then_writes_final_heartbeat_not_alive() {
        let mut w = World::with_free_shards(3);
        let a = w.add_node("a", 1);
        let b = w.add_node("b", 1);
        w.run_until(secs(40.0));
        assert_eq!(w.holds(a), 2);
        let lost_before = w.lost(a).len();
        w.with(a, |m, now, mint| m.shutdown(now, mint));
        w.run_until(secs(41.0));
        assert!(!w.nodes[a].mgr.is_shut_down());
        assert!(w.beats["a"].alive, "not before every lease is released");
        let held: Vec<ShardRef> = w.reading(a).into_iter().collect();
        for s in &held {
            w.with(a, |m, now, mint| m.release(now, s, Some(cp(50)), mint));
        }
        assert!(w.nodes[a].mgr.is_shut_down());
        assert!(!w.beats["a"].alive);
        assert_eq!(w.nodes[a].mgr.poll_timeout(), None);
        let lost = w.lost(a);
        assert_eq!(lost.len(), lost_before + 2);
        assert!(lost[lost_before..]
            .iter()
            .all(|(_, _, r)| *r == LostReason::Released));
        // B sees alive = false and takes them within about a second.
        let t = w.t;
        w.run_until(t + secs(1.5));
        assert_eq!(w.holds(b), 3);
        assert!(w
            .acquired(b)
            .iter()
            .filter(|(t2, ..)| *t2 > t)
            .all(|(.., c)| *c == Some(cp(50))));
    }

    /// Kinesin-sim swarm seed 99: a worker that shuts down while a
    /// hand-off it asked for completes must not leave the row owned by its
    /// dead incarnation.
    #[test]
    fn shutdown_releases_lease_transferred_during_shutdown() {
        let mut w = World::with_free_shards(2);
        let a = w.add_node("a", 1);
        w.run_until(secs(10.0));
        assert_eq!(w.holds(a), 2);
        w.nodes[a].auto_transfer = false;
        let b = w.add_node("b", 1);
        w.run_for(secs(2.0));
        let asked: Vec<ShardRef> = w
            .events(a)
            .filter_map(|(_, e)| match e {
                LeaseEvent::HandoffRequested { shard, to } if to.worker.as_ref() == "b" => {
                    Some(shard.clone())
                }
                _ => None,
            })
            .collect();
        assert_eq!(asked.len(), 1, "b asked for one lease");
        let shard = asked[0].clone();
        let token = w.rows[&shard].token;
        // The owner transfers; at the same instant b starts shutting down,
        // before any read of b has shown it the transfer.
        w.with(a, |m, now, mint| m.transfer(now, &shard, Some(cp(7)), mint));
        assert_eq!(w.rows[&shard].owner, Some(Owner::new("b", 1)));
        assert_eq!(w.holds(b), 0);
        w.rule(b, is_read, Fault::HoldAnswer, 1);
        w.with(b, |m, now, mint| m.shutdown(now, mint));
        // The final heartbeat waits for that read.
        assert!(!w.nodes[b].mgr.is_shut_down());
        assert!(w.beats["b"].alive);
        w.deliver(b);
        assert!(w.nodes[b].mgr.is_shut_down());
        assert!(!w.beats["b"].alive);
        let row = &w.rows[&shard];
        assert_eq!(row.owner, None, "released, not left to a dead incarnation");
        assert_eq!(row.token, token.next().next(), "transfer then release");
        assert_eq!(row.checkpoint, Some(cp(7)), "the final checkpoint stays");
        let releases = w.actions(b, is_release);
        assert_eq!(releases.len(), 1);
        assert_eq!(
            write_of(&releases[0].1).map(LeaseWrite::shard),
            Some(&shard)
        );
        // Nothing else names b afterwards.
        assert!(w
            .rows
            .values()
            .all(|r| r.owner.as_ref().is_none_or(|o| o.worker.as_ref() != "b")));
    }

    /// Kinesin-sim (a joiner shut down within half a second of asking for
    /// hand-offs): the rows kept `pending_owner` = the departed taker, which
    /// blocks every later request for them. The owner gives such a lease
    /// up gracefully (a release: no row is handed to a dead worker) and
    /// takes it back, which clears the mark.
    #[test]
    fn request_of_a_departed_taker_is_cleared_by_the_owner() {
        let mut w = World::with_free_shards(2);
        let a = w.add_node("a", 1);
        w.run_until(secs(10.0));
        assert_eq!(w.holds(a), 2);
        let b = w.add_node("b", 1);
        let asked: Vec<ShardRef> = w
            .rows
            .values()
            .filter(|r| r.pending_owner == Some(Owner::new("b", 1)))
            .map(|r| r.shard.clone())
            .collect();
        assert_eq!(asked.len(), 1, "b asked at once");
        let shard = asked[0].clone();
        let token = w.rows[&shard].token;
        // b leaves before a has seen the request.
        w.with(b, |m, now, mint| m.shutdown(now, mint));
        assert!(w.nodes[b].mgr.is_shut_down());
        assert_eq!(w.rows[&shard].pending_owner, Some(Owner::new("b", 1)));
        w.run_for(secs(40.0));
        let row = &w.rows[&shard];
        assert_eq!(row.pending_owner, None, "the stale request is cleared");
        assert_eq!(
            row.owner,
            Some(Owner::new("a", 1)),
            "and the lease taken back"
        );
        assert_eq!(row.token, token.next().next());
        assert!(w
            .lost(a)
            .iter()
            .any(|(_, s, r)| *s == shard && *r == LostReason::Released));
        assert!(
            w.actions(a, |x| matches!(
                write_of(x),
                Some(LeaseWrite::Transfer { .. })
            ))
            .is_empty(),
            "nothing handed to the departed worker"
        );
        assert_eq!(w.holds(a), 2);
    }

    #[test]
    fn shutdown_completes_when_the_final_read_fails() {
        let mut w = World::with_free_shards(2);
        let a = w.add_node("a", 1);
        w.run_until(secs(10.0));
        w.nodes[a].auto_transfer = false;
        let b = w.add_node("b", 1);
        w.run_for(secs(2.0));
        assert!(!w.nodes[b].mgr.requests.is_empty());
        w.rule(b, is_read, Fault::Transient, 1);
        w.with(b, |m, now, mint| m.shutdown(now, mint));
        assert!(w.nodes[b].mgr.is_shut_down());
        assert!(!w.beats["b"].alive);
    }

    /// Kinesin-sim swarm seed 2600: a worker cut off from DynamoDB while
    /// shutting down self-fenced with its final releases still queued, and
    /// finished with the rows owned by its dead incarnation.
    #[test]
    fn fenced_on_the_way_out_still_releases_its_rows() {
        let mut w = World::with_free_shards(2);
        let a = w.add_node("a", 1);
        w.run_until(secs(10.0));
        assert_eq!(w.holds(a), 2);
        // Heartbeats stop renewing; the worker is still waiting for its
        // in-flight acks (no release asked yet) when the fence comes.
        w.rule(a, is_hb_write, Fault::Transient, usize::MAX);
        w.with(a, |m, now, mint| m.shutdown(now, mint));
        w.run_for(secs(15.0));
        assert!(w.nodes[a].mgr.is_fenced());
        assert!(w.nodes[a].mgr.is_shut_down());
        assert!(w
            .lost(a)
            .iter()
            .all(|(_, _, r)| *r == LostReason::SelfFenced));
        for i in 0..2 {
            assert_eq!(w.row(i).owner, None, "shard {i} released on the way out");
        }
    }

    #[test]
    fn shutdown_takes_nothing_new() {
        let mut w = World::with_free_shards(2);
        let a = w.add_node("a", 1);
        w.run_until(secs(0.5));
        w.with(a, |m, now, mint| {
            m.shutdown(now, mint);
        });
        for s in w.reading(a) {
            w.with(a, |m, now, mint| m.release(now, &s, None, mint));
        }
        assert!(w.nodes[a].mgr.is_shut_down());
        let takes = w.actions(a, is_take).len();
        w.run_until(secs(100.0));
        assert_eq!(w.actions(a, is_take).len(), takes);
    }

    // ----- inputs that are not ours, malformed rows ---------------------------

    #[test]
    fn foreign_inputs_are_not_consumed() {
        let mut world = World::new();
        world.add_node("solo", 1);
        let w = &mut world;
        let now = w.now(0);
        let n = &mut w.nodes[0];
        n.mgr = LeaseManager::new(&config(&n.me), now, 0);
        let mut other = IdMint::default();
        for _ in 0..1000 {
            other.op();
        }
        let foreign = [
            Input::Shards {
                op: other.op(),
                result: Ok(vec![]),
            },
            Input::Leases {
                op: other.op(),
                result: Ok(vec![]),
            },
            Input::LeaseWritten {
                op: other.op(),
                result: Ok(()),
            },
            Input::Heartbeats {
                op: other.op(),
                result: Ok(vec![]),
            },
            Input::HeartbeatWritten {
                op: other.op(),
                result: Ok(()),
            },
        ];
        n.mgr.handle_timeout(now, &mut n.mint);
        let ops_before = n.mgr.ops.len();
        let a = n.mgr.poll_action().unwrap();
        let Action::WriteHeartbeat { op, .. } = a else {
            panic!("{a:?}")
        };
        for input in &foreign {
            assert!(!n.mgr.handle_input(now, input, &mut n.mint));
        }
        // Our op id with the wrong kind of answer is not ours either.
        assert!(!n.mgr.handle_input(
            now,
            &Input::Leases {
                op,
                result: Ok(vec![])
            },
            &mut n.mint
        ));
        assert_eq!(n.mgr.ops.len(), ops_before);
        assert!(n.mgr.handle_input(
            now,
            &Input::HeartbeatWritten { op, result: Ok(()) },
            &mut n.mint
        ));
        // Answered twice: the second is unknown.
        assert!(!n.mgr.handle_input(
            now,
            &Input::HeartbeatWritten { op, result: Ok(()) },
            &mut n.mint
        ));
    }

    #[test]
    fn malformed_rows_never_panic() {
        let mut w = World::new();
        let me = Owner::new("a", 1);
        // Another stream's row, a self-parented row, a row naming us with
        // token 0, a pending owner of ours on a free row, a huge token.
        w.add_row(LeaseRow::new(
            ShardRef::new(StreamId::new("other"), sid(0)),
            vec![],
            1,
        ));
        w.add_row(LeaseRow::new(sref(1), vec![sid(1)], 1));
        let mut r = LeaseRow::new(sref(2), vec![], 1);
        r.owner = Some(me.clone());
        w.add_row(r);
        let mut r = LeaseRow::new(sref(3), vec![], 1);
        r.pending_owner = Some(me.clone());
        w.add_row(r);
        let mut r = LeaseRow::new(sref(4), vec![], u64::MAX);
        r.owner = Some(Owner::new("b", 9));
        r.token = FencingToken(u64::MAX);
        w.add_row(r);
        w.beats.insert(
            "a".into(),
            HeartbeatRow {
                owner: Owner::new("a", 0),
                beat: u64::MAX,
                held: u32::MAX,
                wants: vec![sref(9)],
                alive: false,
            },
        );
        w.beats.insert(
            "b".into(),
            HeartbeatRow {
                owner: Owner::new("b", 9),
                beat: 0,
                held: 0,
                wants: vec![sref(2), sref(2)],
                alive: true,
            },
        );
        let a = w.add_node("a", 1);
        w.strict = false;
        w.run_until(secs(100.0));
        w.nodes[a].mgr.check_invariants().unwrap();
        // The table view holds only rows of the stream asked for.
        assert!(w.nodes[a]
            .mgr
            .table(&stream())
            .all(|r| r.shard.stream == stream()));
        // Duplicate rows in one answer and rows of other streams.
        let now = w.now(a);
        let n = &mut w.nodes[a];
        n.mgr.read_now(&stream(), now);
        n.mgr.handle_timeout(now, &mut n.mint);
        while let Some(x) = n.mgr.poll_action() {
            if let Action::ReadLeases { op, .. } = x {
                let dup = LeaseRow::new(sref(7), vec![], 1);
                let rows = vec![
                    dup.clone(),
                    dup,
                    LeaseRow::new(ShardRef::new(StreamId::new("zz"), sid(1)), vec![], 0),
                ];
                assert!(n.mgr.handle_input(
                    now,
                    &Input::Leases {
                        op,
                        result: Ok(rows)
                    },
                    &mut n.mint
                ));
            }
        }
        n.mgr.check_invariants().unwrap();
    }

    #[test]
    fn poll_timeout_names_the_earliest_deadline() {
        let mut world = World::new();
        world.add_node("solo", 1);
        let w = &mut world;
        let now = w.now(0);
        let n = &mut w.nodes[0];
        let fresh = LeaseManager::new(&config(&n.me), now, 0);
        assert_eq!(fresh.poll_timeout().map(|(at, _)| at), Some(now));
        // After the start-up round: the next heartbeat read, in one second.
        assert_eq!(n.mgr.poll_timeout(), Some((now + SECOND, "heartbeat read")));
    }

    // ----- cost --------------------------------------------------------------

    #[test]
    fn liveness_costs_one_heartbeat_per_interval_whatever_the_shard_count() {
        let mut costs = Vec::new();
        for shards in [2, 300] {
            let mut w = World::with_free_shards(shards);
            let a = w.add_node("a", 1);
            w.run_until(secs(120.0));
            assert_eq!(w.holds(a), shards);
            let s = w.nodes[a].mgr.stats().clone();
            assert_eq!(
                s.other_lease_writes, shards as u64,
                "one take per lease, nothing else"
            );
            assert_eq!(s.checkpoint_writes, 0, "checkpoints only when asked");
            assert_eq!(s.conditional_failures, 0);
            costs.push((s.heartbeat_writes, s.lease_reads, s.heartbeat_reads));
        }
        assert_eq!(costs[0], costs[1]);
        // 120 s / (10 s / 3) + the first one.
        assert_eq!(costs[0].0, 37);
        // At start, once more after the first heartbeat read, then every 30 s.
        assert_eq!(costs[0].1, 6);
    }

    // ----- the fleet under faults ------------------------------------------

    #[test]
    fn fleet_keeps_one_reader_per_shard_under_faults_then_converges() {
        let mut reasons = Vec::new();
        for seed in 1..=12u64 {
            let mut w = World::with_free_shards(12);
            let mut rng = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15);
            let mut next = |m: u64| {
                rng = rng
                    .wrapping_mul(6364136223846793005)
                    .wrapping_add(1442695040888963407);
                (rng >> 33) % m
            };
            for name in ["a", "b", "c"] {
                let i = w.add_node(name, 1);
                w.nodes[i].chaos = Some((seed * 31 + i as u64, 100));
            }
            // Fault phase: random faults on 3 % of the calls, crashes,
            // restarts, partitions, checkpoints.
            for _ in 0..120 {
                let d = Duration::from_millis(500 + next(4000));
                w.run_for(d);
                // Delayed answers (applied when sent) arrive within one
                // step: a runtime bounds its calls with timeouts.
                for k in 0..3 {
                    w.deliver(k);
                }
                let i = next(3) as usize;
                match next(10) {
                    0 => w.kill(i),
                    1 if !w.nodes[i].up => {
                        let j = w.restart(i);
                        w.nodes[j].chaos = Some((seed + next(1000), 100));
                    }
                    2 => w.nodes[i].partitioned = !w.nodes[i].partitioned,
                    _ => {
                        for s in w.reading(i) {
                            let n = next(1000);
                            w.with(i, |m, now, mint| m.write_checkpoint(now, &s, cp(n), mint));
                        }
                    }
                }
            }
            // Heal: every worker up, no faults; must converge.
            for i in 0..3 {
                if !w.nodes[i].up {
                    w.restart(i);
                }
                w.deliver(i);
                w.nodes[i].partitioned = false;
                w.nodes[i].chaos = None;
                w.clear_rules(i);
            }
            w.run_for(secs(120.0));
            let counts: Vec<usize> = (0..3).map(|i| w.reading(i).len()).collect();
            assert_eq!(counts.iter().sum::<usize>(), 12, "seed {seed}: {counts:?}");
            assert!(counts.iter().all(|c| *c == 4), "seed {seed}: {counts:?}");
            for (shard, row) in &w.rows {
                let o = w
                    .owner_of(shard)
                    .unwrap_or_else(|| panic!("seed {seed}: {shard:?} {row:?}"));
                assert_eq!(w.nodes[o].mgr.token(shard), Some(row.token));
            }
            reasons.extend((0..3).flat_map(|i| w.lost(i)).map(|(_, _, r)| r));
        }
        // The faults did bite: fences, hand-offs and takes happened.
        for r in [
            LostReason::SelfFenced,
            LostReason::HandedOff,
            LostReason::Taken,
        ] {
            assert!(reasons.contains(&r), "no {r:?} in any seed");
        }
    }
}

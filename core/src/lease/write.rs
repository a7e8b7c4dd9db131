//! Held leases and their writes: the one-write-in-flight pipeline of each
//! shard, and the only copy of the durable checkpoint on the lease side
//! (SPEC 4 and 5).
//!
//! Rules encoded:
//! - Every lease row carries `owner` and a fencing `token` bumped on every
//!   change of owner; every write on a held lease is conditional on
//!   `(owner = me, token = mine)`, a take on the `(owner, token)` observed.
//! - `SHARD_END` and the release are one conditional write, so a drained
//!   shard is never left ended but owned.
//! - Ambiguous answers (applied or not) are resolved by reading the row:
//!   a take whose row names us is adopted, a final write whose row moved on
//!   is done; failed writes that were surely not applied are retried. A
//!   write refused by its condition is not sent again on a read sent before
//!   the refusal (that read still shows the old row; a refused write costs
//!   a write unit all the same).
//! - A checkpoint asked while one is in flight waits and is sent next (the
//!   newest only); a final write folds the queued checkpoint in, never
//!   moving the stored one backwards.
//! - Bounded DynamoDB concurrency, in priority order (heartbeats are not
//!   lease writes and never wait):
//!   1. final writes (hand-off transfer, release, `SHARD_END`), forced
//!      takes and releases of orphan rows never wait: each is one per
//!      lease, on a timer other workers count on (a delayed hand-off
//!      delays the taker, a delayed release the shutdown);
//!   2. creates, free takes and hand-off requests wait while
//!      `max_lease_writes_in_flight` ownership writes (every kind but
//!      checkpoints) are in flight, so a cold start at 1,000 shards does
//!      not send 1,000 PutItems at once; writes unanswered for a heartbeat
//!      interval no longer count (a hung request holds a connection, not
//!      table capacity, and must not stall a failover). A stream whose
//!      writes waited is created and balanced again, on the view it has,
//!      as soon as room is back; they never wait behind checkpoints;
//!   3. a checkpoint write waits while `max_lease_writes_in_flight` lease
//!      writes of any kind are in flight (a commit tick at 1,000 shards
//!      would otherwise send 1,000 UpdateItems at once); the waiting
//!      shards go in arrival order as answers come back, each with its
//!      newest checkpoint only.
//!
//! Invariants: checkpoint writes are sent only while fewer than
//! `max_lease_writes_in_flight` lease writes are in flight; creates, free
//! takes and requests only while fewer than that many ownership writes
//! sent less than a heartbeat interval ago are in flight; at most one
//! lease write per shard in flight (`busy`), so the
//! answers of one lease apply in order; never a take of a row we own; the
//! token in [`LeaseEvent::Acquired`] is the row's token after the write.
//!
//! Imports: the table view (the base row of a write, the view updated by
//! our applied writes) and the read schedule; of `balance` only the
//! hand-off request states (a forced take or a take's answer moves a
//! request of ours), never the balancing rule.

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::time::Instant;

use super::{LeaseEvent, LeaseManager, Op, RequestState};
use crate::ids::{FencingToken, IdMint, OpId, Owner, ShardRef, StreamId};
use crate::io::{Action, ErrorClass, LostReason};
use crate::sequence::Checkpoint;
use crate::table::{LeaseRow, LeaseWrite};

/// How a held lease is being given up.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(super) enum Leaving {
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
pub(super) enum FinalState {
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
pub(super) struct Held {
    pub(super) token: FencingToken,
    /// Set once `HandoffRequested` was emitted: the taker.
    pub(super) handoff_to: Option<Owner>,
    /// Highest checkpoint known stored.
    pub(super) confirmed: Option<Checkpoint>,
    /// Checkpoint write in flight.
    pub(super) cp_sent: Option<Checkpoint>,
    /// Newest checkpoint asked while one was in flight.
    pub(super) cp_queued: Option<Checkpoint>,
    /// The serial of our last checkpoint write
    /// ([`LeaseRow::checkpoint_serial`]): the next one is higher.
    pub(super) cp_serial: u64,
    /// Set when the lease is being given up.
    pub(super) leaving: Option<(Leaving, FinalState)>,
    /// A live taker lists this shard in its heartbeat `wants`, and no
    /// table read has confirmed the request yet: (taker, `since`), where
    /// `since` is a send instant before which no request of that taker on
    /// our token was published (the last heartbeat read that did not show
    /// the want, or a table read showing the row not pending for it). The
    /// taker forces the take `2 * handoff` after publishing, so by
    /// `since + blind_after` the shard is handed off unconfirmed
    /// (`Liveness::watch_wants`): a confirming read that hangs must not let
    /// the forced take land while we read.
    pub(super) want_watch: Option<(Owner, Instant)>,
}

/// What a lease write was for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum WriteKind {
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

/// The write side of the manager: the leases we hold and the one write
/// in flight per shard, with what their answers taught.
#[derive(Debug, Default)]
pub(super) struct Writes {
    /// Leases we hold (Acquired emitted, Lost not yet).
    pub(super) held: BTreeMap<ShardRef, Held>,
    /// Takes answered `Ambiguous`: the token the row has if it applied.
    pub(super) adoptable: BTreeMap<ShardRef, FencingToken>,
    /// The earliest `FinalState::RetryAt` among `held` (kept exact, so the
    /// drive and `poll_timeout` need not walk every held lease).
    pub(super) retry_at: Option<Instant>,
    /// The one lease write in flight per shard.
    pub(super) busy: BTreeMap<ShardRef, OpId>,
    /// Held shards with a checkpoint queued that waits for room (more than
    /// `max_lease_writes_in_flight` writes in flight), in arrival order;
    /// `cp_waiting_set` holds the same shards.
    pub(super) cp_waiting: VecDeque<ShardRef>,
    pub(super) cp_waiting_set: BTreeSet<ShardRef>,
    /// Shards with a write answered after the oldest pending table read was
    /// sent (value: `seq` of the answer): such a read is stale for them.
    pub(super) changed: BTreeMap<ShardRef, u64>,
    /// Shards whose last write was refused by its condition (value: `seq`
    /// of the answer): the row is not what our view says, and a read sent
    /// before the refusal may still show the old row. Nothing is written
    /// on them again before a read sent after the refusal (a refused write
    /// costs a write unit all the same).
    pub(super) refused: BTreeMap<ShardRef, u64>,
    /// Fenced while shutting down: final writes of the leases we held,
    /// sent (once each, when no other write of the lease is in flight)
    /// before the final heartbeat.
    pub(super) departing: BTreeMap<ShardRef, LeaseWrite>,
    /// Ownership writes in flight (every kind but checkpoints) and when
    /// each was sent.
    pub(super) own_sent: BTreeMap<OpId, Instant>,
    /// Streams whose creates, free takes or hand-off requests waited for
    /// room: created and balanced again once there is.
    pub(super) held_back: BTreeSet<StreamId>,
    /// The time of the manager's latest entry point (`tick`).
    pub(super) now: Option<Instant>,
}

impl LeaseManager {
    /// Emit a lease write unless one is in flight for the shard.
    pub(super) fn send_write(
        &mut self,
        mint: &mut IdMint,
        write: LeaseWrite,
        kind: WriteKind,
        base: Option<LeaseRow>,
    ) -> bool {
        let shard = write.shard().clone();
        if self.writes.busy.contains_key(&shard) {
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
            _ => {
                self.stats.other_lease_writes += 1;
                if let Some(now) = self.writes.now {
                    self.writes.own_sent.insert(op, now);
                }
            }
        }
        self.writes.busy.insert(shard, op);
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

    /// Room for a create, a free take or a hand-off request: fewer than
    /// `max_lease_writes_in_flight` ownership writes in flight, not
    /// counting those unanswered for a heartbeat interval.
    pub(super) fn ownership_room(&self) -> bool {
        let own = &self.writes.own_sent;
        if own.len() < self.timing.max_writes {
            return true;
        }
        let Some(now) = self.writes.now else {
            return true;
        };
        let hung = self.timing.heartbeat;
        own.values().filter(|sent| now < **sent + hung).count() < self.timing.max_writes
    }

    /// [`Self::ownership_room`]; without room, `stream` is remembered to be
    /// created and balanced again once there is.
    pub(super) fn room_or_wait(&mut self, stream: &StreamId) -> bool {
        if self.ownership_room() {
            return true;
        }
        self.writes.held_back.insert(stream.clone());
        false
    }

    /// Create and balance again the streams whose writes waited for room,
    /// if there is room now (before any checkpoint waiting for room).
    pub(super) fn resume_held_back(&mut self, now: Instant, mint: &mut IdMint) {
        if self.writes.held_back.is_empty() || !self.ownership_room() {
            return;
        }
        for stream in std::mem::take(&mut self.writes.held_back) {
            self.create_missing(now, &stream, mint);
            self.balance(now, &stream, mint);
        }
    }

    /// Take a requested lease by force, conditional on the observed token.
    pub(super) fn force_take(&mut self, shard: &ShardRef, mint: &mut IdMint) -> bool {
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
        // While the take is in flight its shard is `busy`: views skip the
        // request (`is_fresh`), the plan offers no forced take on it
        // (`blocked`), so nothing reads `Forcing` before the answer, which
        // removes the request (Ok, Ambiguous) or restores `Waiting { since }`.
        // The cargo-mutants mutant deleting the `!` above (state left
        // `Waiting`, result ignored by both callers) is thus equivalent.
        if let Some(r) = self.requests.get_mut(shard) {
            r.state = RequestState::Forcing { since };
        }
        true
    }

    /// Give up a row that names us but that we do not hold.
    pub(super) fn release_orphan(&mut self, row: &LeaseRow, mint: &mut IdMint) {
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
    pub(super) fn pump_shard(&mut self, shard: &ShardRef, mint: &mut IdMint) {
        if self.writes.busy.contains_key(shard) {
            return;
        }
        let base = self
            .views
            .get(&shard.stream)
            .and_then(|v| v.rows.get(&shard.shard))
            .cloned();
        let me = self.me.clone();
        let Some(h) = self.writes.held.get_mut(shard) else {
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
        if h.cp_queued.is_none() {
            return;
        }
        if self.writes.busy.len() >= self.timing.max_writes {
            // No room: wait in line, keeping only the newest checkpoint.
            if self.writes.cp_waiting_set.insert(shard.clone()) {
                self.writes.cp_waiting.push_back(shard.clone());
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
        h.cp_serial += 1;
        let write = LeaseWrite::Checkpoint {
            shard: shard.clone(),
            owner: me,
            token,
            checkpoint: cp,
            serial: h.cp_serial,
        };
        self.send_write(mint, write, WriteKind::Checkpoint, base);
    }

    /// Send the checkpoints that waited for room, oldest first, while
    /// there is room (a shard no longer held, or busy, is skipped: its
    /// write's answer pumps it).
    pub(super) fn pump_waiting(&mut self, mint: &mut IdMint) {
        while self.writes.busy.len() < self.timing.max_writes {
            let Some(shard) = self.writes.cp_waiting.pop_front() else {
                break;
            };
            self.writes.cp_waiting_set.remove(&shard);
            self.pump_shard(&shard, mint);
        }
    }

    /// The final write of a leaving lease: its transfer or release, with a
    /// queued checkpoint folded in (never moving the stored one backwards).
    /// `None` when the lease is not leaving.
    pub(super) fn final_write(me: &Owner, shard: &ShardRef, h: &mut Held) -> Option<LeaseWrite> {
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
    pub(super) fn on_lease_written(
        &mut self,
        now: Instant,
        op: OpId,
        write: LeaseWrite,
        kind: WriteKind,
        base: Option<LeaseRow>,
        result: Result<(), ErrorClass>,
        written: Option<&LeaseRow>,
        mint: &mut IdMint,
    ) {
        let shard = write.shard().clone();
        if self.writes.busy.get(&shard) == Some(&op) {
            self.writes.busy.remove(&shard);
        }
        if matches!(result, Ok(()) | Err(ErrorClass::Ambiguous)) {
            // Applied, or maybe: a read sent before this answer says
            // nothing about the row any more.
            self.seq += 1;
            self.writes.changed.insert(shard.clone(), self.seq);
        }
        let applied = match result {
            Ok(()) => {
                // The row as written when the store returned it (and it is
                // the row this write made: same shard, owner and token as
                // applying the write to any row would give), else the
                // write applied to our view's row.
                let ours = base.as_ref().and_then(|b| write.apply(Some(b)).ok());
                let returned = written.filter(|r| {
                    r.shard == shard
                        && ours
                            .as_ref()
                            .is_none_or(|o| o.owner == r.owner && o.token == r.token)
                });
                let next = match (&write, returned) {
                    (_, Some(r)) => Some(r.clone()),
                    (LeaseWrite::Create(row), None) => Some(row.clone()),
                    (_, None) => ours,
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
                self.writes.refused.insert(shard.clone(), self.seq);
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
                        self.live.hb_asap = true;
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
                let Some(h) = self.writes.held.get_mut(&shard) else {
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
                let Some(h) = self.writes.held.get_mut(&shard) else {
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
                        self.writes.retry_at = Some(self.writes.retry_at.map_or(at, |r| r.min(at)));
                    }
                }
            }
        }
    }

    pub(super) fn on_take_answer(
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
                    self.live.hb_asap = true;
                }
                // The row after the write: our view's row with the take
                // applied (checkpoint and creation time as last read).
                let mut row = row
                    .unwrap_or_else(|| LeaseRow::new(shard.clone(), Vec::new(), self.unix_ms(now)));
                row.owner = Some(self.me.clone());
                row.token = expect_token.next();
                row.pending_owner = None;
                if self.live.fenced || self.shutting_down || self.writes.held.contains_key(shard) {
                    self.release_orphan(&row, mint);
                } else {
                    self.acquire(&row);
                }
            }
            Err(ErrorClass::Ambiguous) => {
                if self.requests.remove(shard).is_some_and(|r| r.confirmed) {
                    self.live.hb_asap = true;
                }
                if self.shutting_down {
                    // The row may name us: release it before leaving.
                    self.read_once_more(&shard.stream, now);
                } else if !self.live.fenced {
                    self.writes
                        .adoptable
                        .insert(shard.clone(), expect_token.next());
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
                } else {
                    // Someone else took it, or the write failed: balance
                    // again on a fresh view within a heartbeat-read interval
                    // (another orphan may wait), not a rebalance period
                    // later. Not at once: a row that refuses every take
                    // (exhausted token) must not spin reads and writes.
                    self.read_soon(&shard.stream, now);
                }
            }
        }
    }

    pub(super) fn acquire(&mut self, row: &LeaseRow) {
        if self.writes.held.contains_key(&row.shard) {
            self.violation = Some(format!("{:?} acquired twice", row.shard));
            return;
        }
        self.writes.held.insert(
            row.shard.clone(),
            Held {
                token: row.token,
                handoff_to: None,
                confirmed: row.checkpoint.clone(),
                cp_sent: None,
                cp_queued: None,
                cp_serial: row.checkpoint_serial,
                leaving: None,
                want_watch: None,
            },
        );
        // The LATEST anchor: the row's own, or an earlier parent's (rows
        // created concurrently may not have seen their parents' rows; the
        // parents are ended, so their rows are in the view by now).
        let created_ms = self
            .views
            .get(&row.shard.stream)
            .map_or(row.created_ms, |v| {
                v.lineage_created_ms(&row.parents, row.created_ms)
            });
        self.events.push_back(LeaseEvent::Acquired {
            shard: row.shard.clone(),
            token: row.token,
            checkpoint: row.checkpoint.clone(),
            created_ms,
        });
    }

    pub(super) fn lose(&mut self, shard: &ShardRef, reason: LostReason) {
        if let Some(h) = self.writes.held.remove(shard) {
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

    /// The earliest retry of a final write, from a walk of the held leases.
    pub(super) fn earliest_retry_at(&self) -> Option<Instant> {
        self.writes
            .held
            .values()
            .filter_map(|h| match h.leaving {
                Some((_, FinalState::RetryAt(at))) => Some(at),
                _ => None,
            })
            .min()
    }

    /// `retry_at` from a walk of the held leases.
    pub(super) fn recompute_retry_at(&mut self) {
        self.writes.retry_at = self.earliest_retry_at();
    }
}

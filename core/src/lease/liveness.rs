//! Liveness: this worker's heartbeat, its observation of every other
//! worker's heartbeat, the expiry verdicts and the self-fence (SPEC 4).
//!
//! Rules encoded:
//! - Liveness costs O(workers): one heartbeat write per worker every
//!   `heartbeat_interval`, none per lease. An owner is expired when, at a
//!   successful (consistent) heartbeat read, its beat has not changed for
//!   `failover_time` on the observer's clock. The judging instant is the
//!   read's *send* instant and a beat counts as seen from the *reply* of the
//!   first read that showed it, so a read delayed in flight can only make an
//!   owner look younger, never older. A missing row, or a row of an
//!   earlier incarnation, counts from the reply of the first read that
//!   showed it missing; `alive = false` is expired at once; a row of a later
//!   incarnation of the same worker id (a restart, or a second process with
//!   that id) leaves the earlier one expired F after its last beat seen
//!   (after the first read that showed its row replaced when our own reads
//!   had a gap),
//!   and the earlier one, if alive, fences for good at its next heartbeat
//!   read or at its next put, which the table refuses over the later row
//!   (`HeartbeatRow::put_applies`): it stops before anyone may take its
//!   leases, and never writes over the later row. Wall clocks are never
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
//! - One hung heartbeat write (a black-holed connection, answered only at
//!   the driver's call deadline) does not fence: a fresh write goes out a
//!   heartbeat interval after it, and the renewal counts from the send of
//!   whichever succeeds. Only an outage longer than the fence margin fences.
//! - The heartbeat read that judges a silent owner is scheduled at the
//!   instant it would become expired, so its leases go about F after its
//!   last beat, not a read interval later.
//! - Shared tables: our heartbeat lists the streams we consume; the
//!   balancing fleet of our leases is the live workers that consume every
//!   one of our streams (`balancing_workers`, a row without the list
//!   counts as consuming all), and the creators of a stream's rows are
//!   the live workers that consume it (`is_live_reader`). Applications on
//!   other streams sharing the table are still observed (their heartbeat
//!   rows are read) but never counted for our leases.
//! - The heartbeat's `wants` lists our confirmed hand-off requests: the
//!   owner side learns of them here (`request_seen`), and acts on one only
//!   when its view of the row names that taker pending on its own token (a
//!   want asked of a previous owner is stale); otherwise it reads the row
//!   first.
//! - Heartbeat rows of gone workers are collected: a row whose beat has
//!   not changed for `HEARTBEAT_GC_FAILOVERS` failover periods is deleted
//!   by the smallest live owner, conditional on the owner and beat read
//!   (KCL keeps no such rows; without this every worker would read the
//!   row of every worker ever started, each interval).
//!
//! Invariants: at most one heartbeat read in flight, and a heartbeat write
//! sent at most once per heartbeat interval (a new one only when none is in
//! flight or the newest has hung that long); nobody (and never this worker) is expired before a successful
//! heartbeat read; a fenced manager holds nothing.
//!
//! Imports: the table view (owners named by lease rows are observed too)
//! and, for the fence, the held leases of `write`; nothing of `balance`.

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

use super::{FinalBeat, FinalState, LeaseEvent, LeaseManager, Op};
use crate::ids::{IdMint, Owner, ShardRef, StreamId};
use crate::io::{Action, ErrorClass, LostReason};
use crate::table::{consumes_all, HeartbeatRow, LeaseWrite};

/// A heartbeat row whose beat has not changed for this many failover
/// periods is a gone worker's and is deleted (see `collect_heartbeats`).
pub const HEARTBEAT_GC_FAILOVERS: u32 = 10;

/// Heartbeat deletes in flight at most (per worker).
const MAX_HEARTBEAT_DELETES: usize = 16;

/// What we know of one owner's heartbeat.
#[derive(Clone, Debug)]
pub(super) struct Observed {
    /// Last beat seen (`None`: the row was missing or named another
    /// incarnation at the last read).
    pub(super) beat: Option<u64>,
    /// Reply instant of the first read that showed this state.
    pub(super) since: Instant,
    /// The row said `alive = false`.
    pub(super) dead: bool,
    /// The streams its last heartbeat row listed (empty: every stream, a
    /// row of an older version, or no row seen).
    pub(super) streams: Vec<StreamId>,
}

/// This worker's heartbeat (write side), its observation of the others'
/// (read side), and the verdicts drawn from them.
#[derive(Debug)]
pub(super) struct Liveness {
    /// This worker.
    pub(super) me: Owner,
    /// The streams this worker consumes (its configuration), listed in its
    /// heartbeat row.
    pub(super) streams: Vec<StreamId>,
    /// `failover_time`: an unchanged beat this old is expired.
    pub(super) failover: Duration,
    pub(super) beat: u64,
    /// Send instant of the newest heartbeat write in flight. One that hangs
    /// (a black-holed connection) does not block the next: a fresh write
    /// goes out a heartbeat interval after it, so only an outage longer
    /// than the fence margin fences.
    pub(super) hb_inflight: Option<Instant>,
    pub(super) hb_asap: bool,
    /// A later incarnation of our worker id wrote its heartbeat row (a
    /// second process with our id): fenced for good, and no heartbeat is
    /// written over its row any more.
    pub(super) superseded: bool,
    /// [`LeaseEvent::Superseded`] was emitted (once, by the heartbeat read
    /// that shows the later row).
    pub(super) superseded_reported: bool,
    pub(super) next_hb_write: Instant,
    pub(super) last_renew_sent: Option<Instant>,
    pub(super) fenced: bool,

    pub(super) hb_read_inflight: bool,
    /// Successful heartbeat reads so far (saturating).
    pub(super) hb_reads_ok: u32,
    pub(super) next_hb_read: Instant,
    pub(super) last_hb_read_sent: Option<Instant>,
    /// `seq` when the last successful heartbeat read was sent.
    pub(super) last_hb_read_seq: u64,
    pub(super) observed: BTreeMap<Owner, Observed>,
    /// Heartbeat rows of gone workers whose delete is in flight.
    pub(super) collecting: BTreeSet<Owner>,
}

impl Liveness {
    pub(super) fn new(me: Owner, streams: Vec<StreamId>, failover: Duration, now: Instant) -> Self {
        Liveness {
            me,
            streams,
            failover,
            beat: 0,
            hb_inflight: None,
            hb_asap: false,
            superseded: false,
            superseded_reported: false,
            next_hb_write: now,
            last_renew_sent: None,
            fenced: false,
            hb_read_inflight: false,
            hb_reads_ok: 0,
            next_hb_read: now,
            last_hb_read_sent: None,
            last_hb_read_seq: 0,
            observed: BTreeMap::new(),
            collecting: BTreeSet::new(),
        }
    }

    /// Live workers as last observed, this one included.
    pub(super) fn live_workers(&self) -> usize {
        1 + self
            .observed
            .keys()
            .filter(|o| **o != self.me && self.is_live(o))
            .count()
    }

    /// Live workers, this one included, that can read every stream this
    /// worker reads: the fleet our leases are balanced over. Workers of
    /// applications on other streams sharing the table are left out; a
    /// worker on a superset of our streams counts (it can take any of our
    /// leases), one on a subset does not (it cannot take them all), so the
    /// workers that read the most streams of a lease always have room for
    /// all of its rows and no row is orphaned. A fleet whose workers all
    /// consume the same streams counts every live worker.
    pub(super) fn balancing_workers(&self) -> usize {
        1 + self
            .observed
            .iter()
            .filter(|(o, ob)| {
                **o != self.me && consumes_all(&ob.streams, &self.streams) && self.is_live(o)
            })
            .count()
    }

    /// Whether `owner` is live and consumes `stream` (this worker does).
    pub(super) fn is_live_reader(&self, owner: &Owner, stream: &StreamId) -> bool {
        *owner == self.me
            || self.observed.get(owner).is_some_and(|ob| {
                consumes_all(&ob.streams, std::iter::once(stream)) && self.is_live(owner)
            })
    }

    /// A later incarnation of `owner`'s worker id wrote a heartbeat row we
    /// read: `owner` stopped (or stops at its next read) and is forgotten
    /// once no lease row names it, so it is judged neither live nor
    /// expired; a mark it left (`pending_owner`) is stale.
    pub(super) fn is_superseded(&self, owner: &Owner) -> bool {
        self.observed
            .keys()
            .any(|o| o.worker == owner.worker && o.incarnation > owner.incarnation)
    }

    pub(super) fn is_expired(&self, owner: &Owner) -> bool {
        if *owner == self.me {
            return false;
        }
        self.observed
            .get(owner)
            .is_some_and(|ob| Liveness::expired_at(ob, self.last_hb_read_sent, self.failover))
    }

    /// An observation judged at heartbeat read `judged` (sent then): dead,
    /// or its beat unchanged for `failover`. Nobody is expired before a
    /// heartbeat read.
    pub(super) fn expired_at(ob: &Observed, judged: Option<Instant>, failover: Duration) -> bool {
        judged.is_some_and(|r| {
            ob.dead
                || r.checked_duration_since(ob.since)
                    .is_some_and(|d| d >= failover)
        })
    }

    /// How long `owner` has been expired, judged at the last heartbeat
    /// read (zero for an owner marked dead at once; `None` when not
    /// expired).
    pub(super) fn expired_for(&self, owner: &Owner) -> Option<Duration> {
        if !self.is_expired(owner) {
            return None;
        }
        let ob = self.observed.get(owner)?;
        let judged = self.last_hb_read_sent?;
        Some(
            judged
                .checked_duration_since(ob.since + self.failover)
                .unwrap_or_default(),
        )
    }

    /// How long a dead owner's rows wait for the workers below the target
    /// before whoever sees them takes them all (F/20: every observer
    /// judges an expiry within one heartbeat-read interval of the others,
    /// and failover must stay within F + about 2 s, SPEC 4).
    pub(super) fn orphan_grace(&self) -> Duration {
        self.failover / 20
    }

    /// When `owner`'s rows become stale orphans (expired for
    /// [`Self::orphan_grace`]) on our clock; `None` for an owner never
    /// observed.
    pub(super) fn stale_at(&self, owner: &Owner) -> Option<Instant> {
        let ob = self.observed.get(owner)?;
        Some(ob.since + self.failover + self.orphan_grace())
    }

    pub(super) fn is_live(&self, owner: &Owner) -> bool {
        *owner == self.me
            || self
                .observed
                .get(owner)
                .is_some_and(|ob| ob.beat.is_some() && !ob.dead && !self.is_expired(owner))
    }
}

impl LeaseManager {
    /// When we stop delivering: before anyone may judge us expired (our
    /// last renewal), and before a hand-off request we could not see may
    /// be forced (our last successful heartbeat read: a worker whose
    /// reads fail while its writes succeed renews, but is blind to
    /// requests).
    pub(super) fn fence_deadline(&self) -> Instant {
        let renewed = self.live.last_renew_sent.unwrap_or(self.start) + self.timing.fence_after;
        let saw = self.live.last_hb_read_sent.unwrap_or(self.start) + self.timing.blind_after;
        renewed.min(saw)
    }

    /// Self-fence when the deadline passed; runs first in every entry point.
    pub(super) fn tick(&mut self, now: Instant) {
        self.writes.now = Some(now);
        if !self.live.fenced && (now >= self.fence_deadline() || self.live.superseded) {
            self.live.fenced = true;
            for (shard, mut h) in std::mem::take(&mut self.writes.held) {
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
                        self.writes.departing.insert(shard.clone(), write);
                    }
                }
                self.events.push_back(LeaseEvent::Lost {
                    shard,
                    token: h.token,
                    reason: LostReason::SelfFenced,
                });
            }
            self.writes.retry_at = None;
            self.drop_requests();
            self.writes.adoptable.clear();
        }
    }

    pub(super) fn wants(&self) -> Vec<ShardRef> {
        self.requests
            .iter()
            .filter(|(_, r)| r.confirmed)
            .map(|(s, _)| s.clone())
            .collect()
    }

    pub(super) fn send_heartbeat(&mut self, now: Instant, mint: &mut IdMint, alive: bool) {
        self.live.beat += 1;
        let row = HeartbeatRow {
            owner: self.me.clone(),
            beat: self.live.beat,
            held: u32::try_from(self.writes.held.len()).unwrap_or(u32::MAX),
            wants: if alive { self.wants() } else { Vec::new() },
            alive,
            streams: self.live.streams.clone(),
        };
        let op = mint.op();
        self.live.hb_inflight = Some(now);
        self.live.hb_asap = false;
        self.stats.heartbeat_writes += 1;
        let wants = row.wants.clone();
        self.ops.insert(
            op,
            Op::WriteHeartbeat {
                sent: now,
                alive,
                wants,
            },
        );
        self.actions.push_back(Action::WriteHeartbeat { op, row });
    }

    pub(super) fn on_heartbeat_written(
        &mut self,
        now: Instant,
        sent: Instant,
        alive: bool,
        wants: &[ShardRef],
        result: &Result<(), ErrorClass>,
    ) {
        let newest = self.live.hb_inflight == Some(sent);
        if newest {
            self.live.hb_inflight = None;
        }
        if !alive {
            // The final heartbeat: answered, whatever the answer.
            self.final_beat = FinalBeat::Done;
            return;
        }
        match result {
            Ok(()) => {
                for shard in wants {
                    if let Some(r) = self.requests.get_mut(shard) {
                        r.published.get_or_insert(now);
                    }
                }
                let first_renewal = self.live.last_renew_sent.is_none();
                let renewed = self.live.last_renew_sent.map_or(sent, |l| l.max(sent));
                self.live.last_renew_sent = Some(renewed);
                if first_renewal && self.live.last_hb_read_sent.is_some() {
                    // The first heartbeat read (and its balancing reads)
                    // came back before this first renewal, so that pass
                    // was skipped: balance now, not a rebalance period
                    // later.
                    self.read_all_now(now);
                }
                if self.live.fenced && !self.live.superseded && now < self.fence_deadline() {
                    // Renewed again: take leases afresh (token + 1).
                    self.live.fenced = false;
                    self.read_all_now(now);
                }
                self.live.next_hb_write = sent + self.timing.heartbeat;
            }
            Err(ErrorClass::ConditionalFailed) => {
                // The store refused to put our row over a later
                // incarnation's (`HeartbeatRow::put_applies`): another
                // process runs with our worker id. Stop for good now (two
                // processes overwriting each other's row could each hide
                // the other's row, and requests, from every reader); the
                // read due now names it.
                self.live.superseded = true;
                self.live.next_hb_read = self.live.next_hb_read.min(now);
                self.tick(now);
            }
            Err(_) if newest => {
                // Ambiguous or failed: does not renew; try again soon.
                self.live.next_hb_write = now + self.timing.retry();
            }
            // An older (hung) write failing: a newer one is on its way.
            Err(_) => {}
        }
    }

    pub(super) fn on_heartbeats(
        &mut self,
        now: Instant,
        sent: Instant,
        sent_seq: u64,
        result: &Result<Vec<HeartbeatRow>, ErrorClass>,
        mint: &mut IdMint,
    ) {
        self.live.hb_read_inflight = false;
        self.live.next_hb_read = sent + self.timing.heartbeat_read;
        let Ok(rows) = result else {
            return;
        };
        self.live.hb_reads_ok = self.live.hb_reads_ok.saturating_add(1);
        if self.live.hb_reads_ok == 2 {
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
        let first_read = self.live.last_hb_read_sent.is_none();
        let judged_before = self.live.last_hb_read_sent;
        let failover = self.timing.failover;
        // The store keys rows by worker id: one row (one incarnation) each.
        let mut by_owner: BTreeMap<&Owner, &HeartbeatRow> = BTreeMap::new();
        for row in rows {
            by_owner.insert(&row.owner, row);
        }
        // A row of a *later* incarnation of the same worker id means that
        // process restarted, or a second process runs with the same id. The
        // earlier incarnation stops at its next heartbeat read or at its
        // next put (the table refuses it over the later row), and can no
        // longer renew: it is expired F after the first read that showed
        // the later row (see the `(None, p)` case below). (A grace of two
        // read intervals was not safe: an earlier process whose reads fail
        // kept delivering past it; kinesin-sim seeds 5248, 7198.)
        if rows
            .iter()
            .any(|r| r.owner.worker == self.me.worker && r.owner.incarnation > self.me.incarnation)
            && !self.live.superseded_reported
        {
            self.live.superseded = true;
            self.live.superseded_reported = true;
            self.events.push_back(LeaseEvent::Superseded {
                by: rows
                    .iter()
                    .filter(|r| r.owner.worker == self.me.worker)
                    .map(|r| r.owner.clone())
                    .max_by_key(|o| o.incarnation)
                    .unwrap_or_else(|| self.me.clone()),
            });
            self.tick(now);
        }
        // Owners judged expired by this read and not by the previous one.
        let mut turned: Vec<Owner> = Vec::new();
        // Owners known already: update in place.
        for (owner, ob) in self.live.observed.iter_mut() {
            let was = Liveness::expired_at(ob, judged_before, failover);
            *ob = match (by_owner.get(owner), &*ob) {
                (Some(row), p) if p.beat == Some(row.beat) => Observed {
                    dead: p.dead || !row.alive,
                    streams: row.streams.clone(),
                    ..p.clone()
                },
                (Some(row), _) => Observed {
                    beat: Some(row.beat),
                    since: now,
                    dead: !row.alive,
                    streams: row.streams.clone(),
                },
                (None, p) if p.beat.is_none() => p.clone(),
                (None, p) => Observed {
                    beat: None,
                    // Superseded by a later incarnation, or the row gone
                    // (deleted): counts from the first read that misses
                    // it. Not from its last beat seen: it may have renewed
                    // once more unseen, between our previous read and the
                    // later incarnation's first put, and so fences itself
                    // only F - margin after that renewal (kinesin-sim seed
                    // 13847: a live impostor's original, cut from
                    // DynamoDB so it never read the row that stops it,
                    // still read a shard taken from it 2 s before its
                    // fence; seed 1492: the same after a gap in our reads).
                    since: now,
                    dead: false,
                    streams: p.streams.clone(),
                },
            };
            if !was && Liveness::expired_at(ob, Some(sent), failover) {
                turned.push(owner.clone());
            }
        }
        // Owners seen for the first time: in a heartbeat row, or only in a
        // lease row (no heartbeat row: counts from now).
        let mut fresh: Vec<(Owner, Observed)> = Vec::new();
        for (owner, row) in &by_owner {
            if **owner != self.me && !self.live.observed.contains_key(*owner) {
                let ob = Observed {
                    beat: Some(row.beat),
                    since: now,
                    dead: !row.alive,
                    streams: row.streams.clone(),
                };
                fresh.push(((*owner).clone(), ob));
            }
        }
        for v in self.views.values() {
            for owner in v.owners.keys() {
                if *owner != self.me
                    && !self.live.observed.contains_key(owner)
                    && !by_owner.contains_key(owner)
                    && !fresh.iter().any(|(o, _)| o == owner)
                {
                    let ob = Observed {
                        beat: None,
                        since: now,
                        dead: false,
                        streams: Vec::new(),
                    };
                    fresh.push((owner.clone(), ob));
                }
            }
        }
        for (owner, ob) in fresh {
            if Liveness::expired_at(&ob, Some(sent), failover) {
                turned.push(owner.clone());
            }
            self.live.observed.insert(owner, ob);
        }
        // Forget owners nobody mentions any more, but not before they are
        // long expired: an owner whose row vanished (replaced by a later
        // incarnation, or deleted) may hold leases taken since our last
        // table read; its expiry triggers the read that shows them
        // (kinesin-sim seed 17066: forgotten at once, its lease waited for
        // the next rebalance read, failover 12.1 s).
        let views = &self.views;
        let forget_after = failover * HEARTBEAT_GC_FAILOVERS;
        self.live.observed.retain(|o, ob| {
            ob.beat.is_some()
                || views.values().any(|v| v.owners.contains_key(o))
                || sent.saturating_duration_since(ob.since) < forget_after
        });
        self.live.last_hb_read_sent = Some(sent);
        self.live.last_hb_read_seq = sent_seq;
        if !self.live.fenced && !self.shutting_down {
            self.collect_heartbeats(now, &by_owner, mint);
        }
        if self.live.fenced
            && !self.live.superseded
            && !self.shutting_down
            && now < self.fence_deadline()
        {
            // Fenced while blind to requests, and seeing again: take
            // leases afresh (token + 1).
            self.live.fenced = false;
            self.read_all_now(now);
        }
        // The next read is due a read interval after this one, or at the
        // instant an owner whose beat stopped becomes expired, whichever is
        // first: its leases are taken about F after its last beat, not up to
        // a read interval later. A live owner's beat changes every F/3, so
        // this never adds a read while the fleet is healthy.
        if let Some(expiry) = self
            .live
            .observed
            .values()
            .filter(|ob| !ob.dead)
            .map(|ob| ob.since + failover)
            .filter(|t| *t > sent)
            .min()
        {
            self.live.next_hb_read = self.live.next_hb_read.min(expiry);
        }

        // Owner side of hand-offs: a live taker lists one of our leases. A
        // want is bound to the row it was written on: acted upon only when
        // our view of the row names the taker pending (on our token); else
        // the row is read now to confirm, since a want may be stale (asked
        // of the previous owner, cleared by our take).
        if !self.live.fenced && !self.shutting_down {
            let mut confirm: Vec<StreamId> = Vec::new();
            let since = judged_before.unwrap_or(self.start);
            let mut listed: BTreeSet<(&ShardRef, &Owner)> = BTreeSet::new();
            for (owner, row) in &by_owner {
                if **owner == self.me || !row.alive || !self.live.is_live(owner) {
                    continue;
                }
                for shard in &row.wants {
                    listed.insert((shard, *owner));
                    let Some(held) = self.writes.held.get_mut(shard) else {
                        continue;
                    };
                    if held.want_watch.is_none() && held.handoff_to.is_none() {
                        held.want_watch = Some(((*owner).clone(), since));
                    }
                    let held = &*held;
                    let asked = self
                        .views
                        .get(&shard.stream)
                        .and_then(|v| v.rows.get(&shard.shard))
                        .is_some_and(|r| {
                            r.pending_owner.as_ref() == Some(*owner)
                                && r.owner.as_ref() == Some(&self.me)
                                && r.token == held.token
                        });
                    if asked {
                        self.request_seen(shard, owner);
                    } else if held.handoff_to.is_none() && !confirm.contains(&shard.stream) {
                        confirm.push(shard.stream.clone());
                    }
                }
            }
            // A want no longer listed is watched no more.
            for (shard, h) in self.writes.held.iter_mut() {
                if h.want_watch
                    .as_ref()
                    .is_some_and(|(taker, _)| !listed.contains(&(shard, taker)))
                {
                    h.want_watch = None;
                }
            }
            for stream in confirm {
                self.read_now(&stream, now);
            }
            self.watch_wants(now);
        }
        let newly_expired = turned.iter().any(|o| self.live.observed.contains_key(o));
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
    /// Delete the heartbeat rows of workers gone for
    /// [`HEARTBEAT_GC_FAILOVERS`] failover periods (a beat unchanged that
    /// long, dead or silent): every worker reads every row each interval,
    /// so without this the cost of liveness grows with every worker ever
    /// started. One collector, the smallest live owner as judged here (two
    /// that both think so meet a refused condition, nothing worse); each
    /// delete is conditional on the row's owner and beat as read, so a
    /// worker that beat again keeps its row.
    fn collect_heartbeats(
        &mut self,
        now: Instant,
        rows: &BTreeMap<&Owner, &HeartbeatRow>,
        mint: &mut IdMint,
    ) {
        let live = &self.live;
        if live
            .observed
            .keys()
            .any(|o| *o < live.me && live.is_live(o))
        {
            return;
        }
        let gc_after = self.timing.failover * HEARTBEAT_GC_FAILOVERS;
        let mut room = MAX_HEARTBEAT_DELETES.saturating_sub(self.live.collecting.len());
        for (owner, row) in rows {
            if room == 0 {
                break;
            }
            if **owner == self.me || self.live.collecting.contains(*owner) {
                continue;
            }
            let stale = self.live.observed.get(*owner).is_some_and(|ob| {
                ob.beat == Some(row.beat)
                    && now
                        .checked_duration_since(ob.since)
                        .is_some_and(|d| d >= gc_after)
            });
            if !stale {
                continue;
            }
            let op = mint.op();
            let owner = (*owner).clone();
            self.ops.insert(
                op,
                Op::DeleteHeartbeat {
                    owner: owner.clone(),
                },
            );
            self.live.collecting.insert(owner.clone());
            self.actions.push_back(Action::DeleteHeartbeat {
                op,
                owner,
                beat: row.beat,
            });
            room -= 1;
        }
    }

    /// The earliest instant a watched want must be acted upon unconfirmed
    /// (see `Held::want_watch`).
    pub(super) fn want_deadline(&self) -> Option<Instant> {
        self.watched_wants().map(|(_, _, due)| due).min()
    }

    /// Held leases with a watched want not yet acted upon: (shard, taker,
    /// when it is handed off unconfirmed).
    fn watched_wants(&self) -> impl Iterator<Item = (&ShardRef, &Owner, Instant)> + '_ {
        let blind = self.timing.blind_after;
        self.writes
            .held
            .iter()
            .filter(|(_, h)| h.handoff_to.is_none() && h.leaving.is_none())
            .filter_map(move |(s, h)| {
                let (taker, since) = h.want_watch.as_ref()?;
                Some((s, taker, *since + blind))
            })
    }

    /// Hand off every lease whose watched want went unconfirmed until
    /// `since + blind_after`: the taker may force its take from
    /// `since + 2 * handoff` on, so reading stops before (a want that was
    /// stale costs a hand-off that was not asked for, nothing worse).
    pub(super) fn watch_wants(&mut self, now: Instant) {
        if self.live.fenced || self.shutting_down {
            return;
        }
        let due: Vec<(ShardRef, Owner)> = self
            .watched_wants()
            .filter(|(_, _, due)| now >= *due)
            .map(|(s, taker, _)| (s.clone(), taker.clone()))
            .collect();
        for (shard, taker) in due {
            self.request_seen(&shard, &taker);
        }
    }

    pub(super) fn request_seen(&mut self, shard: &ShardRef, taker: &Owner) {
        let Some(h) = self.writes.held.get_mut(shard) else {
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
}

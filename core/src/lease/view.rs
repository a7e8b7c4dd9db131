//! The table view: this worker's last read of each stream's lease rows,
//! when to read them again, what a fresh read means for the leases we hold
//! and asked for, and the creation of missing rows (SPEC 4 and 5).
//!
//! Rules encoded:
//! - A table read sent before an answer about a shard never overrides what
//!   that answer taught (`changed`, `refused`: stale reads are ignored per
//!   shard); a refused write is not sent again on a read sent before the
//!   refusal.
//! - A closed parent is read to its end (`SHARD_END`) before any child is
//!   taken; a parent that neither ListShards nor the table knows any more
//!   (trimmed) counts as ended ([`StreamView::is_active`]).
//! - Cost of creating rows: a row is created only when a table view read
//!   after ListShards lacks it, by one designated creator (the live workers
//!   that consume the stream, in owner order, a stable hash of the shard
//!   picks one: workers of other applications sharing the table never
//!   are); the others
//!   create it only if a view two heartbeat-read intervals later still
//!   lacks it. Free rows are taken in the same spread (`balance`), so a
//!   fleet starting together neither races on creates nor on takes.
//! - A row belongs to one stream incarnation (SPEC 4): rows the last
//!   listing proves to be of an earlier stream of the same name (at
//!   SHARD_END on an open shard, naming an open shard as parent, or
//!   checkpointed below the shard's starting sequence number) are acted on
//!   in no way; the worker stops with an error naming the rows to delete.
//! - Reads run at `rebalance_period`, at heartbeat-read cadence while a
//!   request, an ambiguous take or an ambiguous final write waits on them,
//!   and at once when something just changed (a free row, a shard end).
//!
//! Invariants: `StreamView::owners` counts the owners of `rows` exactly;
//! at most one read per stream in flight.
//!
//! Imports: liveness verdicts (`is_live`, `is_expired`) and the write
//! pipeline (reconcile adopts, loses and releases leases); of `balance`
//! only the hand-off request states (reconcile confirms or drops our
//! requests); the balancing pass itself runs from `mod.rs` after each
//! fresh read.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Instant;

use super::liveness::Liveness;
use super::{
    FinalBeat, FinalState, LeaseEvent, LeaseManager, Leaving, Op, RequestState, WriteKind,
};
use crate::ids::{FencingToken, IdMint, Owner, ShardId, ShardRef, StreamId};
use crate::io::{Action, ErrorClass, LostReason};
use crate::sequence::{Checkpoint, SeqNum};
use crate::table::{LeaseRow, LeaseWrite};

/// Deepest lineage `StreamView::collected` walks (a shard's
/// descendants through this many reshards).
const MAX_LINEAGE_DEPTH: u32 = 64;

/// Lease-row deletes in flight at most (per worker).
const MAX_LEASE_DELETES: usize = 16;

/// This worker's view of one stream's lease rows.
#[derive(Clone, Debug)]
pub(super) struct StreamView {
    pub(super) rows: BTreeMap<ShardId, LeaseRow>,
    /// How many of `rows` each owner holds (kept with `rows` by
    /// [`StreamView::set_rows`] and [`StreamView::set_row`]): every
    /// heartbeat read judges these owners, without walking the rows.
    pub(super) owners: BTreeMap<Owner, u32>,
    /// A read succeeded at least once.
    pub(super) have_view: bool,
    /// A ReadLeases is in flight.
    pub(super) reading: bool,
    /// Read again as soon as the one in flight is answered.
    pub(super) read_again: bool,
    pub(super) next_read: Instant,
    /// `seq` when the last successful read was answered.
    pub(super) reply_seq: u64,
    /// Balance again after the next heartbeat read: this view showed rows
    /// of owners judged expired by a heartbeat read older than the view.
    pub(super) confirm: bool,
    /// ListShards answered at least once.
    pub(super) listed: bool,
    /// Shards known to exist (last ListShards plus children learned since),
    /// with their parents.
    pub(super) known: BTreeMap<ShardId, Vec<ShardId>>,
    /// Parents named by ChildShards since the last ListShards but not known
    /// to it (they appeared after it): they exist, so a child waits for
    /// them; the next ListShards decides (listed, or gone: trimmed).
    pub(super) mentioned: BTreeSet<ShardId>,
    /// The last ListShards: each listed shard, open (no ending sequence
    /// number) or not, and its starting sequence number.
    pub(super) listing: BTreeMap<ShardId, (bool, Option<SeqNum>)>,
    /// Known shards the view lacked, left to their designated creator,
    /// with when: created by us if a view two heartbeat-read intervals
    /// later still lacks them (the designated creator may be dead).
    pub(super) deferred: BTreeMap<ShardId, Instant>,
}

impl StreamView {
    /// A row counts for balancing when it is not ended and every parent is
    /// ended (or gone: neither listed, nor named by a ChildShards since the
    /// last listing, nor in the table).
    pub(super) fn is_active(&self, row: &LeaseRow) -> bool {
        if row.checkpoint == Some(Checkpoint::ShardEnd) {
            return false;
        }
        // A shard with a checkpoint was read: its parents had ended (and
        // their rows may have been collected since).
        row.checkpoint.is_some()
            || row.parents.iter().all(|p| match self.rows.get(p) {
                Some(pr) => pr.checkpoint == Some(Checkpoint::ShardEnd),
                None => {
                    (self.listed && !self.known.contains_key(p) && !self.mentioned.contains(p))
                        || self.collected(p, 0)
                }
            })
    }

    /// A shard without a row whose row was collected: some child has a
    /// row with a checkpoint, or was collected itself (a grandparent).
    /// Such a shard is not created again (it would be read twice).
    pub(super) fn collected(&self, id: &ShardId, depth: u32) -> bool {
        if self.rows.contains_key(id) || depth > MAX_LINEAGE_DEPTH {
            return false;
        }
        self.children(id).any(|c| self.child_done(c, depth + 1))
    }

    /// The shards that name `id` as a parent: listed, or named by a row.
    fn children<'a>(&'a self, id: &'a ShardId) -> impl Iterator<Item = &'a ShardId> + 'a {
        self.known
            .iter()
            .filter(move |(_, parents)| parents.contains(id))
            .map(|(c, _)| c)
            .chain(
                self.rows
                    .values()
                    .filter(move |r| r.parents.contains(id))
                    .map(|r| &r.shard.shard),
            )
    }

    /// A child has a row with a checkpoint, or was collected itself.
    fn child_done(&self, child: &ShardId, depth: u32) -> bool {
        match self.rows.get(child) {
            Some(r) => r.checkpoint.is_some(),
            None => self.collected(child, depth),
        }
    }

    /// The row of a drained shard may be deleted: free, at `SHARD_END`,
    /// some child is known (listed by ListShards or named by a ChildShards:
    /// each names every child of the split or merge, where a child row
    /// names only itself), and every child (known, or named by a row) has
    /// a row with a checkpoint or was collected itself (KCL deletes a
    /// parent's lease once its children have checkpointed). A listing
    /// older than the split knows no child: the rows alone may miss one
    /// whose create is still in flight (swarm seeds 5044, 7598, 9970).
    pub(super) fn collectable(&self, row: &LeaseRow) -> bool {
        if row.owner.is_some() || row.checkpoint != Some(Checkpoint::ShardEnd) || !self.listed {
            return false;
        }
        let id = &row.shard.shard;
        if !self.known.values().any(|parents| parents.contains(id)) {
            return false;
        }
        let mut children = self.children(&row.shard.shard).peekable();
        children.peek().is_some() && children.all(|c| self.child_done(c, 0))
    }

    /// Rows of an earlier stream of the same name (SPEC 4: a row belongs
    /// to one stream incarnation), judged against the last listing: no
    /// row of a shard checkpoints below the shard's starting sequence
    /// number (an earlier stream's shard of the same id, even one
    /// resharded the same way); and, with `shapes` (a listing just
    /// answered, newer than the rows), an open shard cannot have a row at
    /// SHARD_END, nor be named as a parent by a row (a split or merge
    /// closes its parents). Rows newer than the listing may show both
    /// shapes (the shard ended since), never the first. Applied, such rows
    /// keep the new stream's shards unread or read a child before its
    /// parents (a parent's row is collected once its children have
    /// checkpoints). The error says which rows to delete.
    pub(super) fn earlier_stream(&self, stream: &StreamId, shapes: bool) -> Option<String> {
        if !self.listed {
            return None;
        }
        let open = |id: &ShardId| shapes && self.listing.get(id).is_some_and(|(open, _)| *open);
        let (shard, why) = self.rows.values().find_map(|r| {
            let id = &r.shard.shard;
            let seq = match &r.checkpoint {
                Some(Checkpoint::ShardEnd) if open(id) => {
                    return Some((id.clone(), "has a lease row at SHARD_END".to_owned()));
                }
                Some(Checkpoint::After(seq)) => Some(seq),
                Some(Checkpoint::Within(ext)) => Some(&ext.seq),
                _ => None,
            };
            let starting = self.listing.get(id).and_then(|(_, s)| s.as_ref());
            if let (Some(seq), Some(starting)) = (seq, starting) {
                if seq < starting {
                    return Some((
                        id.clone(),
                        format!(
                            "has a lease row checkpointed at {seq}, below its first sequence \
                             number {starting}"
                        ),
                    ));
                }
            }
            let parent = r.parents.iter().find(|p| open(p))?;
            Some((
                parent.clone(),
                format!("is named as a parent by the lease row of {id}"),
            ))
        })?;
        Some(format!(
            "stream {stream} was deleted and recreated under the same name: its shard {shard} \
             {why}, a row of the earlier stream, and applied to the new stream the old rows \
             would leave its shards unread or read them out of order. Stop every consumer of it, delete the rows whose `stream` is \
             {stream} and whose `key` starts with `shard#` (or use a new lease table), then \
             start again"
        ))
    }

    /// The `created_ms` of a new row with these parents: the earliest of
    /// the parents' rows (and `now_ms`). A row without a checkpoint starts
    /// at LATEST as AT_TIMESTAMP(created_ms), so a child inherits its
    /// lineage's anchor: records written to it between the split and its
    /// row's creation are newer than the anchor and read, as KCL reads
    /// children from TRIM_HORIZON. A shard whose parents have no row
    /// (trimmed, or the fleet is new) is anchored now.
    pub(super) fn lineage_created_ms(&self, parents: &[ShardId], now_ms: u64) -> u64 {
        parents
            .iter()
            .filter_map(|p| self.rows.get(p).map(|r| r.created_ms))
            .fold(now_ms, u64::min)
    }

    /// Some shard known to exist has no row in this view.
    pub(super) fn lacks_rows(&self) -> bool {
        let mut lacking = self.known.keys().filter(|id| !self.rows.contains_key(*id));
        if lacking.clone().next().is_none() {
            return false;
        }
        let collected = self.collected_set();
        lacking.any(|id| !collected.contains(id))
    }

    /// Every shard [`StreamView::collected`] says was collected, in one
    /// pass per lineage level.
    pub(super) fn collected_set(&self) -> BTreeSet<ShardId> {
        let mut children: BTreeMap<&ShardId, Vec<&ShardId>> = BTreeMap::new();
        for (c, parents) in &self.known {
            for p in parents {
                children.entry(p).or_default().push(c);
            }
        }
        for r in self.rows.values() {
            for p in &r.parents {
                children.entry(p).or_default().push(&r.shard.shard);
            }
        }
        let mut set = BTreeSet::new();
        for _ in 0..=MAX_LINEAGE_DEPTH {
            let before = set.len();
            for (id, cs) in &children {
                if self.rows.contains_key(*id) || set.contains(*id) {
                    continue;
                }
                let done = cs.iter().any(|c| match self.rows.get(*c) {
                    Some(r) => r.checkpoint.is_some(),
                    None => set.contains(*c),
                });
                if done {
                    set.insert((*id).clone());
                }
            }
            if set.len() == before {
                break;
            }
        }
        set
    }

    pub(super) fn set_rows(&mut self, rows: BTreeMap<ShardId, LeaseRow>) {
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

    pub(super) fn set_row(&mut self, id: ShardId, row: LeaseRow) {
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

impl LeaseManager {
    pub(super) fn read_all_now(&mut self, now: Instant) {
        let streams: Vec<StreamId> = self.views.keys().cloned().collect();
        for s in streams {
            self.read_now(&s, now);
        }
    }

    pub(super) fn read_now(&mut self, stream: &StreamId, now: Instant) {
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
    pub(super) fn read_soon(&mut self, stream: &StreamId, now: Instant) {
        self.read_at(stream, now + self.timing.heartbeat_read);
    }

    /// Read the table of `stream` at `at` at the latest.
    pub(super) fn read_at(&mut self, stream: &StreamId, at: Instant) {
        if let Some(v) = self.views.get_mut(stream) {
            v.next_read = v.next_read.min(at);
        }
    }

    /// The view of `stream` shows rows of an earlier stream of the same
    /// name: report it once ([`LeaseEvent::EarlierStream`]) and act on
    /// nothing of it. Not while shutting down (the rows are then only
    /// released).
    pub(super) fn earlier_stream(&mut self, stream: &StreamId, shapes: bool) -> bool {
        if self.shutting_down {
            return false;
        }
        let Some(message) = self
            .views
            .get(stream)
            .and_then(|v| v.earlier_stream(stream, shapes))
        else {
            return false;
        };
        if self.earlier.insert(stream.clone()) {
            self.events.push_back(LeaseEvent::EarlierStream {
                stream: stream.clone(),
                message,
            });
        }
        true
    }

    /// Shutting down: hold the final heartbeat until a read of `stream`
    /// sent from now on is answered (or fails).
    pub(super) fn read_once_more(&mut self, stream: &StreamId, now: Instant) {
        self.final_reads.insert(stream.clone(), self.seq);
        self.read_now(stream, now);
    }

    pub(super) fn needs_fast_reads(&self, stream: &StreamId) -> bool {
        self.requests.keys().any(|s| s.stream == *stream)
            || self.writes.adoptable.keys().any(|s| s.stream == *stream)
            || self.writes.held.iter().any(|(s, h)| {
                s.stream == *stream && matches!(h.leaving, Some((_, FinalState::Resolving)))
            })
    }

    /// Nothing we wrote or are writing makes the last read stale for this
    /// shard.
    pub(super) fn is_fresh(&self, shard: &ShardRef) -> bool {
        !self.writes.busy.contains_key(shard) && !self.writes.changed.contains_key(shard)
    }

    pub(super) fn on_leases(
        &mut self,
        now: Instant,
        stream: &StreamId,
        sent: Instant,
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
        self.writes
            .changed
            .retain(|s, seq| s.stream != *stream || *seq > sent_seq);
        self.writes
            .refused
            .retain(|s, seq| s.stream != *stream || *seq > sent_seq);
        for shard in self.writes.changed.keys().filter(|s| s.stream == *stream) {
            if let Some(local) = view.rows.get(&shard.shard) {
                fresh.insert(shard.shard.clone(), local.clone());
            }
        }
        // A watched want that this read shows not pending on our token:
        // no request of that taker was published before it was sent.
        for (shard, h) in self.writes.held.iter_mut() {
            if shard.stream != *stream {
                continue;
            }
            let Some((taker, since)) = h.want_watch.as_mut() else {
                continue;
            };
            let stale = fresh.get(&shard.shard).is_some_and(|r| {
                r.owner.as_ref() == Some(&self.me)
                    && r.token == h.token
                    && r.pending_owner.as_ref() != Some(&*taker)
            });
            if stale && sent > *since {
                *since = sent;
            }
        }
        view.set_rows(fresh);
        view.have_view = true;
        self.seq += 1;
        view.reply_seq = self.seq;
        // The rows may be newer than the listing (a shard ended since):
        // only a checkpoint below a shard's start proves them older.
        if !self.earlier_stream(stream, false) {
            self.reconcile(now, stream, mint);
            self.create_missing(now, stream, mint);
            self.collect_ended(stream, mint);
            self.balance(now, stream, mint);
        }

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
    pub(super) fn reconcile(&mut self, now: Instant, stream: &StreamId, mint: &mut IdMint) {
        let Some(view) = self.views.get(stream) else {
            return;
        };
        let rows = view.rows.clone();
        let row_of = |shard: &ShardRef| rows.get(&shard.shard);

        // Held leases.
        let held: Vec<ShardRef> = self
            .writes
            .held
            .keys()
            .filter(|s| s.stream == *stream && self.is_fresh(s))
            .cloned()
            .collect();
        for shard in held {
            let Some(h) = self.writes.held.get(&shard).cloned() else {
                continue;
            };
            let row = row_of(&shard);
            let ours =
                row.is_some_and(|r| r.owner.as_ref() == Some(&self.me) && r.token == h.token);
            match &h.leaving {
                Some((leaving, FinalState::Resolving)) => {
                    if ours {
                        // The ambiguous write did not apply: send it again.
                        if let Some(hm) = self.writes.held.get_mut(&shard) {
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
                    // it instead), which clears the mark; so is one whose
                    // worker id a later process took (forgotten, so
                    // neither live nor expired).
                    if let Some(p) = row.and_then(|r| r.pending_owner.clone()) {
                        if p != self.me
                            && !self.live.fenced
                            && !self.shutting_down
                            && (self.live.is_live(&p)
                                || self.live.is_expired(&p)
                                || self.live.is_superseded(&p))
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
            .filter(|r| !self.writes.held.contains_key(&r.shard) && self.is_fresh(&r.shard))
            .cloned()
            .collect();
        for row in mine {
            let requested = self.requests.remove(&row.shard);
            if requested.as_ref().is_some_and(|r| r.confirmed) {
                self.live.hb_asap = true;
            }
            let adopt =
                requested.is_some() || self.writes.adoptable.get(&row.shard) == Some(&row.token);
            self.writes.adoptable.remove(&row.shard);
            if adopt && !self.live.fenced && !self.shutting_down {
                self.acquire(&row);
                // A taker asked for it (on our token) while we did not know
                // we held it: its want may have been published long ago and
                // its forced take may be close, so hand off now rather than
                // wait to see the want in a heartbeat read (kinesin-sim seed
                // 11507: adopted 10 s before the forced take, heartbeat reads
                // hung meanwhile).
                if let Some(taker) = row.pending_owner.as_ref().filter(|t| **t != self.me) {
                    let taker = taker.clone();
                    self.request_seen(&row.shard, &taker);
                }
            } else {
                self.release_orphan(&row, mint);
            }
        }

        // Ambiguous takes whose row does not name us did not apply.
        let stale: Vec<ShardRef> = self
            .writes
            .adoptable
            .keys()
            .filter(|s| s.stream == *stream && self.is_fresh(s))
            .cloned()
            .collect();
        for s in stale {
            self.writes.adoptable.remove(&s);
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
            let RequestState::Waiting { .. } = req.state else {
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
                self.live.hb_asap = true;
            }
            if let Some(r) = self.requests.get_mut(&shard) {
                r.confirmed = true;
            }
            let published = self.requests.get(&shard).and_then(|r| r.published);
            if published
                .is_some_and(|p| now.saturating_duration_since(p) >= self.timing.handoff * 2)
            {
                self.force_take(&shard, mint);
            }
        }
    }

    /// Create rows for known shards a fresh view lacks, without every
    /// worker racing on every row: each missing row has one designated
    /// creator (`creator_ring`, `shard_spread`); the others defer it and
    /// create it only if a view two heartbeat-read intervals later still
    /// lacks it (the designated creator may be dead or slow to read).
    pub(super) fn create_missing(&mut self, now: Instant, stream: &StreamId, mint: &mut IdMint) {
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
        let Some((me, ring)) = creator_ring(&self.live, stream) else {
            // Too early to agree on creators: the second heartbeat read
            // reads this stream again.
            return;
        };
        let grace = self.timing.heartbeat_read * 2;
        let collected = view.collected_set();
        let mut create: Vec<(ShardId, Vec<ShardId>)> = Vec::new();
        let mut deferred = BTreeMap::new();
        for (id, parents) in &view.known {
            if view.rows.contains_key(id) || collected.contains(id) {
                continue;
            }
            let shard = ShardRef::new(stream.clone(), id.clone());
            if self.writes.refused.contains_key(&shard) {
                // A create of ours was refused: the row exists.
                continue;
            }
            let since = view.deferred.get(id).copied();
            let overdue = since.is_some_and(|t| now >= t + grace);
            if shard_spread(&shard) % ring == me || overdue {
                create.push((id.clone(), parents.clone()));
            } else {
                deferred.insert(id.clone(), since.unwrap_or(now));
            }
        }
        if let Some(view) = self.views.get_mut(stream) {
            view.deferred = deferred;
        }
        let now_ms = self.unix_ms(now);
        for (id, parents) in create {
            if !self.room_or_wait(stream) {
                break;
            }
            let created_ms = self
                .views
                .get(stream)
                .map_or(now_ms, |v| v.lineage_created_ms(&parents, now_ms));
            let row = LeaseRow::new(ShardRef::new(stream.clone(), id), parents, created_ms);
            self.send_write(mint, LeaseWrite::Create(row), WriteKind::Create, None);
        }
    }
}

impl LeaseManager {
    /// Delete the rows of drained shards whose children have all
    /// checkpointed ([`StreamView::collectable`]); each by the live reader
    /// the creator ring designates for it, on condition that the row is
    /// still free, at `SHARD_END` and on the token read. Without this,
    /// rows pile up with every reshard and every worker reads them all.
    pub(super) fn collect_ended(&mut self, stream: &StreamId, mint: &mut IdMint) {
        if self.shutting_down || self.live.fenced {
            return;
        }
        let Some(view) = self.views.get(stream) else {
            return;
        };
        let Some((me, ring)) = creator_ring(&self.live, stream) else {
            return;
        };
        let room = MAX_LEASE_DELETES.saturating_sub(self.deleting.len());
        let doomed: Vec<(ShardRef, FencingToken)> = view
            .rows
            .values()
            .filter(|r| {
                shard_spread(&r.shard) % ring == me
                    && !self.deleting.contains(&r.shard)
                    && view.collectable(r)
            })
            .take(room)
            .map(|r| (r.shard.clone(), r.token))
            .collect();
        for (shard, token) in doomed {
            let op = mint.op();
            self.deleting.insert(shard.clone());
            self.ops.insert(
                op,
                Op::DeleteLease {
                    shard: shard.clone(),
                },
            );
            self.actions
                .push_back(Action::DeleteLease { op, shard, token });
        }
    }
}

/// This worker's place among the live readers of `stream` (itself
/// included; workers of other applications sharing the table are left
/// out) in owner order, and their number: the ring that spreads row
/// creation and free takes. `None` before the second successful heartbeat
/// read: workers that start together have all written their first
/// heartbeat by then, so they agree on the ring.
pub(super) fn creator_ring(live: &Liveness, stream: &StreamId) -> Option<(u64, u64)> {
    if live.hb_reads_ok < 2 {
        return None;
    }
    let mut before = 0u64;
    let mut ring = 1u64;
    for o in live.observed.keys() {
        if *o != live.me && live.is_live_reader(o, stream) {
            ring += 1;
            before += u64::from(*o < live.me);
        }
    }
    Some((before, ring))
}

/// A stable spread of shards (FNV-1a of the stream and shard ids): the
/// same on every worker, every platform and every version.
pub(super) fn shard_spread(shard: &ShardRef) -> u64 {
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

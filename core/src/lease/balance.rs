//! Balancing: which leases this worker takes and which hand-offs it asks
//! for after a fresh read of a stream (SPEC 4, balancing).
//!
//! Rules encoded:
//! - `target = ceil(active leases / live workers)`; free and expired leases
//!   are taken first, then the whole remaining deficit is asked from the
//!   most loaded live workers in the same pass (`pending_owner`), announced
//!   in the taker's heartbeat `wants`. The owner transfers with its final
//!   checkpoint; past `2 * handoff_timeout` the taker takes by force,
//!   conditional on the token it observed.
//! - Workers that balance on the same fresh rows (a fleet starting
//!   together) take the rows the creator ring designates to them first.
//! - A dead owner's row is taken only when the heartbeat read that judged
//!   it was sent after the view showing the row; otherwise the plan asks
//!   for a confirming heartbeat read.
//!
//! Invariants: only rows of the stream just read are taken or asked for;
//! never a row we own, hold, write, adopt, were refused on or quarantined.

use std::collections::{BTreeMap, VecDeque};
use std::time::Instant;

use super::{LeaseManager, Op, WriteKind};
use crate::ids::{FencingToken, IdMint, Owner, StreamId};
use crate::table::{LeaseRow, LeaseWrite};

/// Where a hand-off request of ours is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum RequestState {
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
pub(super) struct Request {
    /// The owner and token observed when asking.
    pub(super) owner: Owner,
    pub(super) token: FencingToken,
    pub(super) state: RequestState,
    /// The table (or the write's answer) shows `pending_owner = me`: listed
    /// in our heartbeat's `wants`.
    pub(super) confirmed: bool,
}

impl LeaseManager {
    /// The balancing pass after a fresh read of `stream` (only its rows are
    /// taken or asked for, so every take is based on a fresh row).
    pub(super) fn balance(&mut self, now: Instant, stream: &StreamId, mint: &mut IdMint) {
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
}

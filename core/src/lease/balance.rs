//! Balancing: which leases this worker takes and which hand-offs it asks
//! for after a fresh read of a stream (SPEC 4, balancing).
//!
//! Rules encoded:
//! - `target = ceil(active leases / live workers)`, counting the active
//!   leases of every stream we consume and the live workers that consume
//!   all of them (`Liveness::balancing_workers`: applications on other
//!   streams sharing the table do not lower the target; loads count only
//!   rows of our streams); free and expired leases
//!   are taken first, up to the target counting held leases and takes in
//!   flight (not hand-offs asked for, so an orphan never waits behind a
//!   request), and one dead owner's row more per pass past the target (the
//!   worker below it may be unable to take it), and every dead owner's row
//!   still untaken F/20 after its owner expired (the table read again at that
//!   instant); no hand-off is asked while an orphan waits for a confirming
//!   heartbeat read; then hand-offs are asked from the
//!   most loaded live workers in the same pass (`pending_owner`, announced
//!   in the taker's heartbeat `wants`), one per lease while we are below
//!   the target and the owner holds at least two more than we would. The
//!   fleet settles with every worker within one lease of every other, so
//!   each holds at least `floor(active leases / live workers)`. The owner transfers with its final
//!   checkpoint; past `2 * handoff_timeout` the taker takes by force,
//!   conditional on the token it observed.
//! - Workers that balance on the same fresh rows (a fleet starting
//!   together) take the rows the creator ring of the stream (its live
//!   readers) designates to them first.
//! - A dead owner's row is taken only when the heartbeat read that judged
//!   it was sent after the view showing the row; otherwise the plan asks
//!   for a confirming heartbeat read.
//!
//! The rule is one pure function, [`plan`]: from the table view, the
//! liveness verdicts and this worker's load to a [`Plan`], which the
//! manager executes in order (`LeaseManager::balance` in `mod.rs`: the
//! writes, their op ids and every other effect happen there). A change of
//! the rule touches this file and its tests only.
//!
//! - Explicit shards (`Config::explicit_shards`, Bento's `stream:shard`):
//!   only the listed rows are candidates, every free or expired one is
//!   taken whatever the target, and no hand-off is asked.
//!
//! Invariants: only rows of the stream just read are taken or asked for;
//! never a row we own, hold, write, adopt, were refused on or quarantined;
//! every take and request of a plan is on a distinct shard with no write
//! in flight, so each one is sent.
//!
//! Imports: the table view and the liveness verdicts; nothing of `write`.

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::time::Instant;

use super::liveness::Liveness;
use super::view::{creator_ring, shard_spread, StreamView};
use crate::ids::{FencingToken, Owner, ShardRef, StreamId};
use crate::table::LeaseRow;

/// At most this many hand-off requests of ours at once: each is listed in
/// our heartbeat row's `wants`, and a DynamoDB item holds at most 400 KB
/// (about 4,500 shard references); the rest of a deficit is asked in later
/// passes, as requests complete.
pub(super) const MAX_REQUESTS: usize = 1_000;

/// Where a hand-off request of ours is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum RequestState {
    /// RequestHandoff in flight.
    Sending,
    /// Waiting for the owner's transfer; forced `2 * handoff` after the
    /// request was published (`Request::published`).
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
    /// When a heartbeat write listing it in `wants` was first answered
    /// (our clock): the owner can see the request from then on, and the
    /// take is forced only `2 * handoff` after it. An owner whose
    /// heartbeat reads fail cannot see it: it fences `2 * handoff -
    /// margin` after its last successful read was sent, before this
    /// deadline can pass.
    pub(super) published: Option<Instant>,
}

/// What this worker holds or has under way, as the rule counts it.
pub(super) struct Load<'a> {
    /// Held leases not being given up.
    pub(super) staying: usize,
    /// Plain (not forced) takes in flight.
    pub(super) taking: usize,
    /// Our hand-off requests.
    pub(super) requests: &'a BTreeMap<ShardRef, Request>,
    /// Shards neither taken nor asked for now: held, with a write in
    /// flight, an ambiguous take to adopt, a refused write, quarantined.
    pub(super) blocked: &'a dyn Fn(&ShardRef) -> bool,
    /// Explicit shards (Bento's `stream:shard`); empty: balanced.
    pub(super) explicit: &'a BTreeSet<ShardRef>,
}

/// A lease to take.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(super) enum Take {
    /// A free or expired row, conditional on its observed `(owner, token)`.
    Free(LeaseRow),
    /// A row we asked for whose owner died: by force, at once (the request
    /// is already counted in the load).
    Forced(ShardRef),
}

/// A hand-off to ask of a live owner.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(super) enum Ask {
    /// Write `pending_owner = me` on `row`, conditional on `owner` and the
    /// row's token.
    Request { row: LeaseRow, owner: Owner },
    /// `row` already names us pending: an earlier request of ours that we
    /// lost track of (fence, ambiguous answer). It stands; wait for the
    /// transfer.
    Stands { row: LeaseRow, owner: Owner },
}

/// One balancing pass, executed in this order: `takes`, then `confirm`,
/// then `asks`.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub(super) struct Plan {
    /// Free and expired leases to take, in the order to send them.
    pub(super) takes: Vec<Take>,
    /// The view showed rows of owners judged expired by a heartbeat read
    /// older than the view: read heartbeats now, then balance again.
    pub(super) confirm: bool,
    /// Dead owners' rows were left untaken (past the target and the one
    /// overflow take of this pass): read the table again soon and take the
    /// next, rather than a rebalance period later.
    pub(super) orphans_left: bool,
    /// The earliest instant an orphan left untaken becomes stale (taken by
    /// whoever sees it): the table is read again then, so a failover
    /// waits for no read cadence on top of the grace.
    pub(super) stale_at: Option<Instant>,
    /// Hand-offs to ask for, in the order to send them.
    pub(super) asks: Vec<Ask>,
}

/// The balancing pass after a fresh read of `stream`: only its rows are
/// taken or asked for, so every take is based on a fresh row; `views` (all
/// streams) give the number of active leases and each owner's load.
pub(super) fn plan(
    views: &BTreeMap<StreamId, StreamView>,
    stream: &StreamId,
    live: &Liveness,
    load: &Load<'_>,
) -> Plan {
    let me = &live.me;
    let mut plan = Plan::default();
    let workers = live.balancing_workers();
    let mut total = 0usize;
    // Per owner of a row: (owner, live, active rows not requested by
    // us). A handful of owners: a list, each judged once.
    let mut owners: Vec<(&Owner, bool, usize)> = Vec::new();
    for view in views.values() {
        for row in view.rows.values() {
            if !view.is_active(row) {
                continue;
            }
            total += 1;
            let Some(o) = &row.owner else {
                continue;
            };
            if o == me || (!load.requests.is_empty() && load.requests.contains_key(&row.shard)) {
                continue;
            }
            match owners.iter_mut().find(|(x, _, _)| *x == o) {
                Some((_, _, n)) => *n += 1,
                None => owners.push((o, live.is_live(o), 1)),
            }
        }
    }
    let mut loads: BTreeMap<Owner, usize> = owners
        .into_iter()
        .filter(|(_, live, _)| *live)
        .map(|(o, _, n)| (o.clone(), n))
        .collect();
    let target = total.div_ceil(workers.max(1));
    // Orphans (free and expired rows) are taken up to the target counting
    // only what we hold and take: a hand-off we asked for must not leave an
    // orphan unread until the next pass.
    let holding = load.staying + load.taking;
    let mut deficit = target.saturating_sub(holding);
    let Some(view) = views.get(stream) else {
        return plan;
    };
    // Explicit shards: every listed row that is free or expired, no
    // target, no hand-off asked (Bento reads listed shards unbalanced).
    let explicit = !load.explicit.is_empty();
    if explicit {
        deficit = usize::MAX;
    }
    // Rows we wrote since the read was sent show our own answered write
    // (newer than the read): fine to act on; every take is conditional
    // anyway. Rows with a write in flight are not (`blocked`).
    let mut candidates: Vec<LeaseRow> = view
        .rows
        .values()
        .filter(|r| view.is_active(r))
        .filter(|r| r.owner.as_ref() != Some(me))
        .filter(|r| !(load.blocked)(&r.shard))
        .filter(|r| !explicit || load.explicit.contains(&r.shard))
        .cloned()
        .collect();
    // Workers that balance on the same fresh rows (a fleet starting
    // together) would all take the same first free rows: each takes
    // the rows the ring designates to it first, then its neighbours'.
    // The spread is reduced modulo the ring first so the sum cannot
    // overflow (adding it whole gives the same key for every hash more
    // than 2 * ring below u64::MAX: the one cargo-mutants mutant of this
    // line no test can catch).
    if let Some((at, ring)) = creator_ring(live, stream) {
        candidates.sort_by_cached_key(|r| (shard_spread(&r.shard) % ring + ring - at) % ring);
    }

    // 1. Free and expired leases. An expiry judged at heartbeat read r
    // holds only for (owner, token) pairs that existed before r: the
    // owner may have renewed and taken leases afresh since. So a dead
    // owner's row is taken only when r was sent after this view
    // arrived; otherwise confirm with a heartbeat read first.
    //
    // A dead owner's row is an orphan nobody reads: past the target, one
    // more per pass is taken (`overflow`), since the worker below the
    // target may be unable to take it (its calls failing). The fleet
    // rebalances by hand-off afterwards. Free rows never overflow (a fleet
    // starting together spreads them by the ring).
    let confirmed = live.last_hb_read_seq > view.reply_seq;
    let mut overflow = true;
    for row in &candidates {
        let takable = match &row.owner {
            None => deficit > 0,
            Some(o) if live.is_expired(o) => {
                plan.confirm |= !confirmed;
                // An orphan still untaken a while after its owner expired
                // (the workers below the target had their pass) is taken
                // by whoever sees it, however many.
                let stale = live
                    .expired_for(o)
                    .is_some_and(|d| d >= live.orphan_grace());
                // `overflow` is true while `deficit > 0` (it turns false
                // only on a take at deficit 0, and the deficit never grows),
                // so `deficit > 0` here is for the reader: mutating it to
                // `deficit < 0` (never) changes nothing.
                let take = confirmed && (deficit > 0 || overflow || stale);
                if confirmed && !take {
                    plan.orphans_left = true;
                    plan.stale_at = match (plan.stale_at, live.stale_at(o)) {
                        (Some(a), Some(b)) => Some(a.min(b)),
                        (a, b) => a.or(b),
                    };
                }
                take
            }
            Some(_) => false,
        };
        if !takable {
            continue;
        }
        if load.requests.contains_key(&row.shard) {
            plan.takes.push(Take::Forced(row.shard.clone()));
            continue;
        }
        plan.takes.push(Take::Free(row.clone()));
        if deficit > 0 {
            deficit -= 1;
        } else {
            overflow = false;
        }
    }

    // 2. Ask the most loaded live workers for the rest. Not while orphans
    // wait for a confirming heartbeat read: they come first, and the pass
    // runs again once it is answered.
    if plan.confirm || explicit {
        return plan;
    }
    let mut offer: BTreeMap<Owner, VecDeque<LeaseRow>> = BTreeMap::new();
    for row in &candidates {
        let Some(o) = &row.owner else {
            continue;
        };
        if !live.is_live(o) || load.requests.contains_key(&row.shard) {
            continue;
        }
        match &row.pending_owner {
            None => {}
            Some(p) if p == me => {}
            Some(_) => continue,
        }
        offer.entry(o.clone()).or_default().push_back(row.clone());
    }
    // Ask while we are below the ceiling and some owner holds at least two
    // more than we would: every hand-off narrows the spread, none can undo
    // another, and the fleet settles with every worker within one lease of
    // every other (so each holds at least `floor(leases / workers)`, also
    // when the shape does not divide evenly).
    let mut ours = target - deficit + load.requests.len();
    let mut room = MAX_REQUESTS.saturating_sub(load.requests.len());
    while ours < target && room > 0 {
        let best = loads
            .iter()
            .filter(|(o, l)| **l >= ours + 2 && offer.get(*o).is_some_and(|q| !q.is_empty()))
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
        if row.pending_owner.as_ref() == Some(me) {
            plan.asks.push(Ask::Stands { row, owner });
        } else {
            plan.asks.push(Ask::Request { row, owner });
        }
        ours += 1;
        room -= 1;
    }
    plan
}

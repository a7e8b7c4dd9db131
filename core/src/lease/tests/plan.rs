//! The balancing rule as the pure function it is (`balance::plan`): one
//! hand-built shape per behaviour (the table view, the liveness verdicts,
//! this worker's load), and tables of uneven shapes (prime shard counts,
//! 1 to 50 workers, lineages, requests in flight) settled by the rule
//! alone. Each test names the behaviour it pins; together they catch every
//! viable cargo-mutants mutant of `plan` (the equivalent ones are named
//! where the code they concern is tested).

use super::super::balance::{self, Ask, Load, Plan, Request, RequestState, Take};
use super::super::liveness::{Liveness, Observed};
use super::super::view::{shard_spread, StreamView};
use super::*;

const F: Duration = Duration::from_secs(10);

/// One worker's inputs to a balancing pass.
struct Shape {
    t0: Instant,
    /// The heartbeat read the verdicts come from was sent at `judged`.
    judged: Instant,
    live: Liveness,
    rows: BTreeMap<ShardId, LeaseRow>,
    /// `seq` when the view was answered (the heartbeat read's is 10).
    reply_seq: u64,
    staying: usize,
    taking: usize,
    requests: BTreeMap<ShardRef, Request>,
}

fn owner(name: &str) -> Owner {
    Owner::new(name, 1)
}

impl Shape {
    /// Worker `me` after a heartbeat read sent at seq 10 and a table read
    /// answered before it (seq 9): expiries are confirmed.
    fn new(me: &str) -> Shape {
        let t0 = crate::test_epoch();
        let judged = t0 + Duration::from_secs(100);
        let mut live = Liveness::new(owner(me), vec![stream()], F, t0);
        live.last_hb_read_sent = Some(judged);
        live.last_hb_read_seq = 10;
        live.hb_reads_ok = 1;
        Shape {
            t0,
            judged,
            live,
            rows: BTreeMap::new(),
            reply_seq: 9,
            staying: 0,
            taking: 0,
            requests: BTreeMap::new(),
        }
    }

    /// A live worker (beat seen a second before the read).
    fn worker(mut self, name: &str) -> Shape {
        self.observe(name, Duration::from_secs(1));
        self
    }

    /// A worker expired for `d` at the last heartbeat read (its beat
    /// unchanged for `F + d`).
    fn dead(mut self, name: &str, d: Duration) -> Shape {
        self.observe(name, F + d);
        self
    }

    fn observe(&mut self, name: &str, unchanged: Duration) {
        self.live.observed.insert(
            owner(name),
            Observed {
                beat: Some(1),
                since: self.judged - unchanged,
                dead: false,
                streams: vec![],
            },
        );
    }

    /// Shards `ids` held by `name` (ours when `name` is this worker).
    fn owns(mut self, name: &str, ids: impl IntoIterator<Item = usize>) -> Shape {
        for i in ids {
            let mut row = LeaseRow::new(sref(i), vec![], 1);
            row.owner = Some(owner(name));
            row.token = FencingToken(1);
            if row.owner.as_ref() == Some(&self.live.me) {
                self.staying += 1;
            }
            self.rows.insert(sid(i), row);
        }
        self
    }

    fn free(mut self, ids: impl IntoIterator<Item = usize>) -> Shape {
        for i in ids {
            self.rows.insert(sid(i), LeaseRow::new(sref(i), vec![], 1));
        }
        self
    }

    /// Shard `i`'s row names `pending` as the taker asked for.
    fn pending(mut self, i: usize, pending: &str) -> Shape {
        self.rows.get_mut(&sid(i)).expect("row").pending_owner = Some(owner(pending));
        self
    }

    /// A hand-off request of ours on shard `i` (held by `of`), waiting.
    fn requested(mut self, i: usize, of: &str) -> Shape {
        let request = Request {
            owner: owner(of),
            token: FencingToken(1),
            state: RequestState::Waiting { since: self.t0 },
            confirmed: true,
            published: Some(self.t0),
        };
        self.requests.insert(sref(i), request);
        self
    }

    fn plan(&self) -> Plan {
        let view = StreamView {
            rows: self.rows.clone(),
            owners: BTreeMap::new(),
            have_view: true,
            reading: false,
            read_again: false,
            next_read: self.t0,
            reply_seq: self.reply_seq,
            confirm: false,
            listed: true,
            known: BTreeMap::new(),
            mentioned: BTreeSet::new(),
            listing: BTreeMap::new(),
            deferred: BTreeMap::new(),
        };
        let views = BTreeMap::from([(stream(), view)]);
        let blocked = |_: &ShardRef| false;
        let explicit = BTreeSet::new();
        let load = Load {
            staying: self.staying,
            taking: self.taking,
            requests: &self.requests,
            blocked: &blocked,
            explicit: &explicit,
        };
        balance::plan(&views, &stream(), &self.live, &load)
    }
}

/// The shards a plan takes by a plain take, in order.
fn taken(p: &Plan) -> Vec<usize> {
    p.takes
        .iter()
        .filter_map(|t| match t {
            Take::Free(row) => Some(index(&row.shard)),
            Take::Forced(_) => None,
        })
        .collect()
}

/// The hand-offs a plan asks for: (shard, owner, stands).
fn asked(p: &Plan) -> Vec<(usize, String, bool)> {
    p.asks
        .iter()
        .map(|a| match a {
            Ask::Request { row, owner } => (index(&row.shard), owner.worker.to_string(), false),
            Ask::Stands { row, owner } => (index(&row.shard), owner.worker.to_string(), true),
        })
        .collect()
}

fn index(s: &ShardRef) -> usize {
    s.shard.as_str()["shardId-".len()..]
        .parse()
        .expect("shard index")
}

fn ask(i: usize, of: &str) -> (usize, String, bool) {
    (i, of.to_string(), false)
}

// ----- hand-offs ----------------------------------------------------------

#[test]
fn a_worker_with_a_request_in_flight_asks_the_rest_of_its_deficit_on_other_shards() {
    // 4 leases on a, 2 workers: target 2. One request of ours on shard 0
    // is waiting; the next pass asks one more, never shard 0 again.
    let s = Shape::new("me")
        .worker("a")
        .owns("a", 0..4)
        .requested(0, "a");
    let p = s.plan();
    assert_eq!(asked(&p), vec![ask(1, "a")]);
    assert!(p.takes.is_empty() && !p.confirm && !p.orphans_left);
}

#[test]
fn never_asks_past_the_target() {
    // 12 leases on 3 workers (target 4): a holds 10, b 2. We ask a for 4
    // and stop, although a would still hold 6.
    let s = Shape::new("me")
        .worker("a")
        .worker("b")
        .owns("a", 0..10)
        .owns("b", 10..12);
    assert_eq!(
        asked(&s.plan()),
        (0..4).map(|i| ask(i, "a")).collect::<Vec<_>>()
    );
}

#[test]
fn a_fleet_within_one_lease_asks_nothing() {
    // {3, 3, 2}: the worker with 2 is below the target (3) but nobody holds
    // two more than it would: asking would only move the gap around.
    let s = Shape::new("me")
        .worker("a")
        .worker("b")
        .owns("a", 0..3)
        .owns("b", 3..6)
        .owns("me", 6..8);
    assert_eq!(s.plan(), Plan::default());
    // {3, 3, 3, 0}: the joiner asks two, one from each of the first two
    // most loaded (ties in owner order), so the fleet ends {2, 2, 2, 3}.
    let s = Shape::new("me")
        .worker("a")
        .worker("b")
        .worker("c")
        .owns("a", 0..3)
        .owns("b", 3..6)
        .owns("c", 6..9);
    assert_eq!(asked(&s.plan()), vec![ask(0, "a"), ask(3, "b")]);
}

#[test]
fn asks_the_next_loaded_owner_when_the_most_loaded_has_nothing_to_give() {
    // a holds 6, all already asked for by c; b holds 4. We ask b, not
    // give up because a (the most loaded) offers nothing.
    let mut s = Shape::new("me")
        .worker("a")
        .worker("b")
        .worker("c")
        .owns("a", 0..6)
        .owns("b", 6..10);
    for i in 0..6 {
        s = s.pending(i, "c");
    }
    // 10 leases over 4 workers: target 3; b has 4 (>= 0 + 2), then 3
    // (>= 1 + 2), then 2: two asks.
    assert_eq!(asked(&s.plan()), vec![ask(6, "b"), ask(7, "b")]);
}

#[test]
fn a_row_naming_us_pending_that_we_lost_track_of_stands() {
    // Shard 0 names us pending (an earlier request whose answer we lost):
    // it stands and counts, and only the rest is asked anew.
    let s = Shape::new("me")
        .worker("a")
        .owns("a", 0..4)
        .pending(0, "me");
    assert_eq!(
        asked(&s.plan()),
        vec![(0, "a".to_string(), true), ask(1, "a")]
    );
    // A row pending for another taker is not asked for.
    let s = Shape::new("me").worker("a").owns("a", 0..4).pending(0, "b");
    assert_eq!(asked(&s.plan()), vec![ask(1, "a"), ask(2, "a")]);
}

#[test]
fn a_request_whose_owner_died_is_forced_at_once() {
    let s = Shape::new("me")
        .worker("a")
        .dead("x", Duration::ZERO)
        .owns("x", 0..1)
        .owns("a", 1..3)
        .requested(0, "x");
    let p = s.plan();
    assert_eq!(p.takes, vec![Take::Forced(sref(0))]);
    assert!(p.asks.is_empty(), "{p:?}");
}

// ----- orphans ------------------------------------------------------------

#[test]
fn an_expiry_judged_by_a_heartbeat_read_sent_before_the_view_arrived_is_confirmed_first() {
    // x's rows are orphans; we hold nothing (target 2 of 4 over 2).
    let shape = |reply_seq: u64| {
        let mut s = Shape::new("me")
            .worker("a")
            .dead("x", Duration::ZERO)
            .owns("x", 0..4);
        s.reply_seq = reply_seq;
        s
    };
    // Heartbeat read sent (seq 10) after the view was answered (seq 9):
    // the verdict holds for every row of the view.
    let p = shape(9).plan();
    assert_eq!(taken(&p), vec![0, 1, 2], "target 2, plus one overflow");
    assert!(!p.confirm && p.orphans_left);
    // Sent before the view arrived (seq 10 is the view's, or older): the
    // owner may have renewed and taken since; confirm, take nothing, ask
    // nothing.
    for reply_seq in [10, 11, 40] {
        let p = shape(reply_seq).plan();
        assert!(p.confirm, "view at seq {reply_seq}");
        assert!(p.takes.is_empty() && p.asks.is_empty() && !p.orphans_left);
    }
}

#[test]
fn past_the_target_one_orphan_more_per_pass_until_they_are_stale() {
    // We already hold our target (2 of 4 over 2 workers); x died holding
    // two. Just expired: one more (overflow), the other left for a
    // worker below the target, and the table read again soon.
    let shape = |d: Duration| {
        Shape::new("me")
            .worker("a")
            .dead("x", d)
            .owns("me", 0..2)
            .owns("x", 2..4)
    };
    for d in [Duration::ZERO, F / 20 - Duration::from_millis(1)] {
        let s = shape(d);
        let p = s.plan();
        assert_eq!(taken(&p), vec![2], "expired for {d:?}");
        assert!(p.orphans_left && !p.confirm);
        // The table is read again the moment the orphan turns stale.
        assert_eq!(p.stale_at, Some(s.judged - d + F / 20), "expired for {d:?}");
    }
    // Expired for F/20 or longer: the workers below the target had their
    // pass; whoever sees the orphans takes them all.
    for d in [F / 20, F] {
        let p = shape(d).plan();
        assert_eq!(taken(&p), vec![2, 3], "expired for {d:?}");
        assert!(!p.orphans_left && !p.confirm);
    }
}

#[test]
fn orphans_are_taken_up_to_the_deficit_plus_one_and_the_rest_flagged() {
    // Target 3 (6 over 2), we hold 1: deficit 2, plus one overflow; the
    // fourth orphan is left and flagged. Free rows never overflow.
    let s = Shape::new("me")
        .worker("a")
        .dead("x", Duration::ZERO)
        .owns("me", 0..1)
        .owns("x", 1..5)
        .free(5..6);
    let p = s.plan();
    assert_eq!(taken(&p), vec![1, 2, 3]);
    assert!(p.orphans_left);
    let s = Shape::new("me").worker("a").owns("me", 0..2).free(2..6);
    let p = s.plan();
    assert_eq!(taken(&p), vec![2], "free rows up to the target only");
    assert!(!p.orphans_left);
}

// ----- the creator ring ----------------------------------------------------

#[test]
fn workers_starting_together_take_the_rows_the_ring_designates_to_them_first() {
    // A ring of 3 live readers (a, me, z): we are at position 1 and take
    // the free rows whose spread is 1 modulo 3 first, then position 2's,
    // then 0's. Four rows of each class: our target (12 / 3) is exactly
    // our class.
    let mut class: [Vec<usize>; 3] = Default::default();
    for i in 0.. {
        let c = &mut class[(shard_spread(&sref(i)) % 3) as usize];
        if c.len() < 4 {
            c.push(i);
        }
        if class.iter().all(|c| c.len() == 4) {
            break;
        }
    }
    let all: Vec<usize> = class.iter().flatten().copied().collect();
    // Position: how many live readers sort before us.
    for (me, at) in [("b", 1usize), ("zz", 2)] {
        let mut s = Shape::new(me).worker("a").worker("z").free(all.clone());
        s.live.hb_reads_ok = 2;
        assert_eq!(taken(&s.plan()), class[at], "{me} at position {at}");
        // Before the second heartbeat read the ring is not agreed: rows in
        // shard order.
        s.live.hb_reads_ok = 1;
        let mut first = all.clone();
        first.sort_unstable();
        assert_eq!(taken(&s.plan()), first[..4].to_vec(), "{me}");
    }
}

// ----- uneven shapes ---------------------------------------------------------

/// Prime shard counts among others, and fleets from 1 to 50 workers.
const SHARDS: [usize; 10] = [1, 2, 3, 5, 7, 9, 13, 31, 53, 97];
const WORKERS: [usize; 9] = [1, 2, 3, 4, 5, 7, 13, 31, 50];

/// A lease table of `n` active leases (owner: index into the fleet, or
/// free), plus an ended parent row and a child waiting for an open
/// parent, neither of which counts or may be taken.
struct Table {
    names: Vec<String>,
    owners: Vec<Option<usize>>,
}

impl Table {
    fn new(workers: usize, owners: Vec<Option<usize>>) -> Table {
        let names = (0..workers).map(|k| format!("w{k:02}")).collect();
        Table { names, owners }
    }

    /// Shard ids: 0..n active, n ended, n + 1 child of shard 0 (open).
    fn shape(&self, k: usize) -> Shape {
        let mut s = Shape::new(&self.names[k]);
        for (j, name) in self.names.iter().enumerate() {
            if j != k {
                s = s.worker(name);
            }
        }
        for (i, o) in self.owners.iter().enumerate() {
            s = match o {
                Some(j) => s.owns(&self.names[*j], [i]),
                None => s.free([i]),
            };
        }
        let n = self.owners.len();
        let mut ended = LeaseRow::new(sref(n), vec![], 1);
        ended.checkpoint = Some(Checkpoint::ShardEnd);
        s.rows.insert(sid(n), ended);
        s.rows
            .insert(sid(n + 1), LeaseRow::new(sref(n + 1), vec![sid(0)], 1));
        s
    }

    /// Worker `k`'s pass, applied at once (hand-offs transferred): how
    /// many leases it gained.
    fn pass(&mut self, k: usize) -> usize {
        let p = self.shape(k).plan();
        let n = self.owners.len();
        let target = n.div_ceil(self.names.len());
        assert!(!p.confirm && !p.orphans_left, "{p:?}");
        let mut gained = 0;
        for i in taken(&p)
            .into_iter()
            .chain(asked(&p).into_iter().map(|(i, _, _)| i))
        {
            assert!(
                i < n,
                "{} took or asked for an inactive row {i}",
                self.names[k]
            );
            assert_ne!(self.owners[i], Some(k), "asked for its own lease");
            self.owners[i] = Some(k);
            gained += 1;
        }
        assert!(
            gained == 0 || self.held(k) <= target,
            "{} gained past the target {target}",
            self.names[k]
        );
        gained
    }

    fn held(&self, k: usize) -> usize {
        self.owners.iter().filter(|o| **o == Some(k)).count()
    }

    /// Passes by every worker in turn until a round changes nothing; at
    /// most `rounds` rounds (a rule that churns fails here, not spins).
    fn settle(&mut self, rounds: usize) -> usize {
        for round in 0..rounds {
            let moved: usize = (0..self.names.len()).map(|k| self.pass(k)).sum();
            if moved == 0 {
                return round;
            }
        }
        panic!("not settled after {rounds} rounds: {:?}", self.loads());
    }

    fn loads(&self) -> Vec<usize> {
        (0..self.names.len()).map(|k| self.held(k)).collect()
    }

    /// Every worker holds floor or ceil of leases / workers.
    fn assert_balanced(&self, what: &str) {
        let (n, w) = (self.owners.len(), self.names.len());
        let loads = self.loads();
        assert!(
            self.owners.iter().all(Option::is_some),
            "{what}: a lease unowned"
        );
        for l in &loads {
            assert!(
                (n / w..=n.div_ceil(w)).contains(l),
                "{what}: {loads:?} not within floor..ceil of {n}/{w}"
            );
        }
    }
}

#[test]
fn every_uneven_shape_settles_with_every_worker_at_floor_or_ceil() {
    for n in SHARDS {
        for w in WORKERS {
            // All free: takes up to the target, then hand-offs.
            let mut t = Table::new(w, vec![None; n]);
            t.settle(4);
            t.assert_balanced(&format!("{n} free over {w}"));
            // One worker holds everything (the others just started).
            let mut t = Table::new(w, vec![Some(0); n]);
            t.settle(4);
            t.assert_balanced(&format!("{n} on one of {w}"));
            // Settled, then no change at all (no churn within one lease).
            let before = t.owners.clone();
            assert_eq!(t.settle(1), 0);
            assert_eq!(t.owners, before, "{n} over {w} churned");
        }
    }
}

#[test]
fn a_joining_worker_asks_its_floor_share_in_its_first_pass_for_every_shape() {
    for n in SHARDS {
        for w in WORKERS.into_iter().filter(|w| *w >= 2) {
            // w - 1 workers settled (round robin: within one lease), the
            // last one just joined holding nothing.
            let mut t = Table::new(w, (0..n).map(|i| Some(i % (w - 1))).collect());
            let joiner = w - 1;
            // Its first pass's requests still in flight (not transferred):
            // a second pass asks nothing more, and no shard twice.
            let first = t.shape(joiner).plan();
            let mut again = t.shape(joiner);
            for (i, of, _) in asked(&first) {
                again = again.requested(i, &of);
            }
            assert_eq!(
                asked(&again.plan()),
                vec![],
                "{n} over {w}, requests in flight"
            );
            let gained = t.pass(joiner);
            let what = format!("{n} over {w}: {:?}", t.loads());
            assert!(gained >= n / w, "{what}: joiner got {gained}");
            assert!(gained <= n.div_ceil(w), "{what}");
            t.settle(3);
            t.assert_balanced(&what);
        }
    }
}

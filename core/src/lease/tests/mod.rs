//! An in-memory lease table applying [`LeaseWrite::apply`], several
//! managers with their own clocks, and a router that executes their
//! actions and feeds the answers back, with scripted faults.

//!
//! One file per behaviour family; every file uses this harness.

use super::*;
use crate::config::Retrieval;
use crate::ids::ShardId;
use crate::io::ErrorClass;
use crate::kpl::HashRange;
use crate::sequence::SeqNum;
use crate::table::HeartbeatRow;
use std::collections::BTreeSet;

mod balance;
mod handoff;
mod liveness;
mod plan;
mod robustness;
mod shutdown;
mod view;
mod write;

/// Bounds that make a livelock (a rule that asks, refuses and asks again
/// without time passing) fail a test instead of hanging it. The largest
/// test (2,400 free leases taken) sends 2,400 writes and a few reads at
/// one instant, and every test passes with timers due at most 100 times at
/// one instant.
const MAX_ACTIONS_AT_ONE_INSTANT: usize = 20_000;
const MAX_STEPS_AT_ONE_INSTANT: usize = 100;

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
        let me = Owner::new(worker, incarnation);
        self.add_node_config(config(&me), pre)
    }

    /// As `add_node_with`, with a configuration of its own (other streams).
    fn add_node_config(&mut self, cfg: Config, pre: impl FnOnce(&mut LeaseManager)) -> usize {
        let i = self.nodes.len();
        let me = cfg.owner.clone();
        let offset =
            Duration::from_secs(1_000_000 * (i as u64 + 1)) + Duration::from_millis(137 * i as u64);
        let now = self.epoch + offset + self.t;
        let mut mgr = LeaseManager::new(&cfg, now, 1_700_000_000_000 + 86_400_000 * i as u64);
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
                let key = row.owner.worker.to_string();
                if !HeartbeatRow::put_applies(self.beats.get(&key), row) {
                    return Some(Input::HeartbeatWritten {
                        op: *op,
                        result: Err(ErrorClass::ConditionalFailed),
                    });
                }
                if apply {
                    self.beats.insert(key, row.clone());
                }
                Input::HeartbeatWritten {
                    op: *op,
                    result: Ok(()),
                }
            }
            Action::DeleteLease { op, shard, token } => {
                let result = if LeaseRow::delete_applies(self.rows.get(shard), *token) {
                    if apply {
                        self.rows.remove(shard);
                    }
                    Ok(())
                } else {
                    Err(ErrorClass::ConditionalFailed)
                };
                Input::LeaseDeleted { op: *op, result }
            }
            Action::DeleteHeartbeat { op, owner, beat } => {
                let key = owner.worker.to_string();
                let result = if HeartbeatRow::delete_applies(self.beats.get(&key), owner, *beat) {
                    if apply {
                        self.beats.remove(&key);
                    }
                    Ok(())
                } else {
                    Err(ErrorClass::ConditionalFailed)
                };
                Input::HeartbeatDeleted { op: *op, result }
            }
            Action::WriteLease { op, write } => {
                let (result, row) = match write.apply(self.rows.get(write.shard())) {
                    Ok(next) => {
                        if apply {
                            self.rows.insert(next.shard.clone(), next.clone());
                        }
                        (Ok(()), Some(Box::new(next)))
                    }
                    Err(_) => (Err(ErrorClass::ConditionalFailed), None),
                };
                Input::LeaseWritten {
                    op: *op,
                    result,
                    row,
                }
            }
            _ => return None,
        })
    }

    /// Run the node's I/O until it is quiet.
    fn pump(&mut self, i: usize) {
        let mut sent = 0usize;
        for _ in 0..10_000 {
            if !self.nodes[i].up {
                return;
            }
            let now = self.now(i);
            let mut progress = false;
            while let Some(a) = self.nodes[i].mgr.poll_action() {
                progress = true;
                sent += 1;
                assert!(
                    sent <= MAX_ACTIONS_AT_ONE_INSTANT,
                    "livelock: {sent} actions at one instant, last {a:?}"
                );
                self.nodes[i].actions.push((self.t, a.clone()));
                let answer = match self.fault_for(i, &a) {
                    None => self.execute(&a, true),
                    Some(Fault::Ambiguous) => self
                        .execute(&a, true)
                        .map(|x| x.failed(ErrorClass::Ambiguous)),
                    Some(Fault::LostRequest) => self
                        .execute(&a, false)
                        .map(|x| x.failed(ErrorClass::Ambiguous)),
                    Some(Fault::Transient) => self
                        .execute(&a, false)
                        .map(|x| x.failed(ErrorClass::Transient)),
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
        let mut still = 0usize;
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
                    still = if at > self.t { 0 } else { still + 1 };
                    assert!(
                        still <= MAX_STEPS_AT_ONE_INSTANT,
                        "livelock: timers due again and again at {:?}",
                        self.t
                    );
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
            .writes
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
            for (shard, h) in n
                .mgr
                .writes
                .held
                .iter()
                .filter(|(_, h)| h.leaving.is_none())
            {
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

    fn acquired(&self, i: usize) -> Vec<(Duration, ShardRef, FencingToken, Option<Checkpoint>)> {
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

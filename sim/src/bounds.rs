//! Timed bounds: the liveness figures the simulator reports, each asserted
//! where SPEC.md promises it, with every sample tagged by its cause.
//!
//! Models: open samples (a failover that has begun, a worker that has
//! joined, a held shard waiting for progress, a forced take whose old owner
//! has not yet been stepped) and their closing events. A sample whose
//! bound passes while it is still open is *censored* and counts as a
//! violation when the sample is asserted; an asserted sample still open
//! when the run ends is one too ([`Bounds::end`]).
//!
//! What is asserted (SPEC section), with `healthy` as the world defines it
//! (`World::healthy` in `fleet.rs`: a running, unpaused worker that is not
//! shutting down, not cut from DynamoDB nor from Kinesis, whose sink is not
//! stalled, so its pool drains, and that has not fenced itself):
//!
//! - `failover-bound` (4): after a crash ([`crate::Op::Crash`]), every
//!   shard the crashed worker held (rows it owned, not at SHARD_END) is read
//!   (GetShardIterator, GetRecords or SubscribeToShard sent) by another
//!   worker within [`FAILOVER_BOUND`] (F + 2 s), provided a worker that was
//!   healthy at the crash stays healthy throughout that window (cause
//!   `crash-with-survivor`); when the crashed worker's id starts again
//!   before that (a later incarnation), within F + 2 s of that start
//!   (`restart-same-id`: the earlier one may have renewed unseen, so it
//!   expires F after the later one is seen). Samples of other causes
//!   (`crash-no-survivor`,
//!   `stall`, `partition`, `shutdown`) are measured and reported, not
//!   asserted; a non-crash sample is dropped when its old owner reads the
//!   shard again (it kept it: no failover happened).
//! - `join-bound` (4): a worker that joins (or restarts) when no fault is
//!   active (the heal phase, or a run without random faults, and no
//!   crash, stall, partition, sink stall or shutdown within the last F)
//!   holds `floor(active leases / live workers)` within [`JOIN_BOUND`]
//!   (2 rebalance periods + 5 s). A fault during the window makes the
//!   sample unasserted (`join-after-fault`).
//! - `stall` (6, 7): a shard held by a healthy worker, readable (every
//!   parent at SHARD_END or gone), not at SHARD_END and with no hand-off
//!   pending, makes progress (a batch delivered, or a read answered with
//!   `millis_behind == 0`: it is caught up) at least every
//!   [`STALL_BOUND`], in both phases, except while its reader waits for
//!   pool room (`Worker::waits_for_pool`: the budget is held by the
//!   worker's other shards, and the sink is the bottleneck; a shard starved
//!   for good is the heal bound's to catch). A subscription that goes silent
//!   (`Faults::efo_silent`) restarts its shard's clock: the shard must make
//!   progress within the idle watchdog plus backoff of the silence (or of
//!   a later fault of its resubscription, before that progress).
//! - `fencing-order` (4): a forced take (a Take against an owner, without
//!   a hand-off request of the taker pending) is applied only after the
//!   old owner stopped delivering: the old owner's first step at or after
//!   the take's application must find it fenced or no longer holding the
//!   shard under the taken token. Stronger than `delivery-requires-lease`:
//!   it fails even when the old owner happened to have nothing to deliver.
//!
//! Invariants: pure bookkeeping; the world calls the hooks and stops at the
//! first `Err`. Samples are closed at most once.

use std::collections::{BTreeMap, BTreeSet};

use kinesin_core::ids::{FencingToken, Owner, ShardRef};

use crate::oracle::{Check, Violation};
use crate::sched::{Micros, MS, SEC};

/// Failover time F (the core's default, `Config::failover_time`).
pub const FAILOVER_TIME: Micros = 10 * SEC;
/// A crashed worker's shards are read elsewhere within this (SPEC 4: F +
/// about 2 s: a heartbeat read interval to see expiry, the take, the read).
pub const FAILOVER_BOUND: Micros = FAILOVER_TIME + 2 * SEC;
/// A joining worker holds its floor share within this: two rebalance
/// periods (30 s each, `Config::rebalance_period`) and 5 s for reads and
/// hand-offs in flight.
pub const JOIN_BOUND: Micros = 2 * 30 * SEC + 5 * SEC;
/// A healthy holder's shard makes progress at least this often: the EFO
/// idle watchdog (30 s, SPEC 6: "a half-open connection never stalls a
/// shard for longer than the watchdog plus backoff") plus the backoff cap
/// (5 s, `Backoff::CAP`). It also covers the slowest start the simulator
/// gives a reader: EFO consumer activation (at most 20 s in `kinesis.rs`,
/// described every 2 s) plus the 5 s ResourceInUse hold-off, and the
/// hand-off timeout (10 s) plus GetRecords at 1 s idle intervals.
pub const STALL_BOUND: Micros = 30 * SEC + 5 * SEC;

/// A process incarnation: (process index, incarnation).
pub type ProcId = (usize, u64);

/// Why a shard changed reader.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Cause {
    /// Its owner crashed while a healthy survivor existed (asserted).
    CrashWithSurvivor,
    /// Its owner crashed and no survivor stayed healthy for the window.
    CrashNoSurvivor,
    /// Its owner stalled (a zombie if longer than F).
    Stall,
    /// Its owner was cut from DynamoDB (it self-fences past F - margin).
    Partition,
    /// Its owner shut down gracefully (released).
    Shutdown,
    /// Its owner crashed with a survivor, and its worker id started again
    /// (a later incarnation) before the shard was read elsewhere: nobody
    /// can tell the earlier incarnation dead from alive and renewing
    /// unseen, so it expires F after the later one is seen (SPEC 4). The
    /// bound runs from the restart.
    RestartSameId,
}

impl Cause {
    /// The tag printed in the summary and trace.
    pub fn name(self) -> &'static str {
        match self {
            Cause::CrashWithSurvivor => "crash-with-survivor",
            Cause::CrashNoSurvivor => "crash-no-survivor",
            Cause::Stall => "stall",
            Cause::Partition => "partition",
            Cause::Shutdown => "shutdown",
            Cause::RestartSameId => "restart-same-id",
        }
    }

    /// Whether the sample counts among the asserted crash failovers of the
    /// summary (measured from the crash).
    pub fn asserted(self) -> bool {
        self == Cause::CrashWithSurvivor
    }

    /// Whether [`FAILOVER_BOUND`] is asserted for this cause (from the
    /// crash, or from the restart for [`Cause::RestartSameId`]).
    pub fn bounded(self) -> bool {
        matches!(self, Cause::CrashWithSurvivor | Cause::RestartSameId)
    }
}

#[derive(Clone, Debug)]
struct OpenFailover {
    from: Owner,
    at: Micros,
    /// When the bound starts: the crash, or the restart of its worker id.
    bound_from: Micros,
    cause: Cause,
    survivors: BTreeSet<ProcId>,
}

#[derive(Clone, Debug)]
struct OpenJoin {
    proc: ProcId,
    owner: Owner,
    at: Micros,
    asserted: bool,
}

#[derive(Clone, Debug)]
struct FenceCheck {
    proc: ProcId,
    owner: Owner,
    shard: ShardRef,
    token: FencingToken,
    taker: Owner,
    at: Micros,
}

/// The timed oracles' state and their samples.
#[derive(Clone, Debug, Default)]
pub struct Bounds {
    failovers: BTreeMap<ShardRef, OpenFailover>,
    /// Closed failover samples, by cause.
    pub failover_samples: Vec<(Cause, Micros)>,
    joins: Vec<OpenJoin>,
    /// Closed join samples: (asserted, join -> fair share).
    pub join_samples: Vec<(bool, Micros)>,
    /// Held shards due progress: since when without it.
    watch: BTreeMap<(Owner, ShardRef), Micros>,
    /// Held shards whose subscription went silent, not yet progressed.
    recovering: BTreeSet<(Owner, ShardRef)>,
    /// The last silence of a subscription of each worker.
    last_silence: BTreeMap<Owner, Micros>,
    fences: Vec<FenceCheck>,
}

fn violation(at: Micros, oracle: &'static str, message: String) -> Violation {
    Violation {
        at,
        oracle,
        message,
    }
}

fn ms(us: Micros) -> Micros {
    us / MS
}

impl Bounds {
    /// A failover begins: `from` no longer reads `shard`. A crash is
    /// `crash-with-survivor` when `survivors` (healthy at the crash) is
    /// not empty. Replaces an open sample of the shard.
    pub fn open_failover(
        &mut self,
        now: Micros,
        shard: ShardRef,
        from: Owner,
        cause: Cause,
        survivors: BTreeSet<ProcId>,
    ) {
        let cause = match cause {
            Cause::CrashWithSurvivor | Cause::CrashNoSurvivor if survivors.is_empty() => {
                Cause::CrashNoSurvivor
            }
            Cause::CrashWithSurvivor | Cause::CrashNoSurvivor => Cause::CrashWithSurvivor,
            other => other,
        };
        self.failovers.insert(
            shard,
            OpenFailover {
                from,
                at: now,
                bound_from: now,
                cause,
                survivors,
            },
        );
    }

    /// Process `p` is no longer healthy: it is no survivor any more, and a
    /// join window it overlaps is not fault-free.
    pub fn unhealthy(&mut self, p: ProcId) {
        for f in self.failovers.values_mut() {
            if f.survivors.remove(&p) && f.survivors.is_empty() && f.cause.bounded() {
                f.cause = Cause::CrashNoSurvivor;
            }
        }
    }

    /// A process started with worker id `worker` (a restart, or a second
    /// process): open crash failovers of an earlier incarnation of that id
    /// become [`Cause::RestartSameId`], bounded from now.
    pub fn restarted(&mut self, now: Micros, worker: &str) {
        for f in self.failovers.values_mut() {
            if &*f.from.worker == worker && f.cause == Cause::CrashWithSurvivor {
                f.cause = Cause::RestartSameId;
                f.bound_from = now;
            }
        }
    }

    /// A fault began: open join samples are no longer asserted.
    pub fn disrupted(&mut self) {
        for j in &mut self.joins {
            j.asserted = false;
        }
    }

    /// `owner` sent a read of `shard`: closes its failover sample (or drops
    /// it, when the old owner reads again). Returns the closed sample.
    pub fn read(
        &mut self,
        now: Micros,
        shard: &ShardRef,
        owner: &Owner,
    ) -> Result<Option<(Cause, Micros, Owner)>, Violation> {
        let Some(f) = self.failovers.get(shard) else {
            return Ok(None);
        };
        if f.from == *owner {
            self.failovers.remove(shard);
            return Ok(None);
        }
        let f = self.failovers.remove(shard).expect("present");
        let took = now - f.at;
        self.failover_samples.push((f.cause, took));
        if f.cause.bounded() && now - f.bound_from > FAILOVER_BOUND {
            return Err(violation(
                now,
                "failover-bound",
                format!(
                    "{shard} of crashed {} read by {owner} {}ms after the crash, {}ms after the bound's start (bound {}ms, cause {}, survivors {:?})",
                    f.from,
                    ms(took),
                    ms(now - f.bound_from),
                    ms(FAILOVER_BOUND),
                    f.cause.name(),
                    f.survivors
                ),
            ));
        }
        Ok(Some((f.cause, took, f.from)))
    }

    /// Censored failovers: an asserted sample open past its bound.
    pub fn check_failovers(&self, now: Micros) -> Check {
        for (shard, f) in &self.failovers {
            if f.cause.bounded() && now > f.bound_from + FAILOVER_BOUND {
                return Err(violation(
                    now,
                    "failover-bound",
                    format!(
                        "{shard} of crashed {} not read by another worker {}ms after the crash (bound {}ms, cause {}, survivors healthy throughout {:?}; censored)",
                        f.from,
                        ms(now - f.at),
                        ms(FAILOVER_BOUND),
                        f.cause.name(),
                        f.survivors
                    ),
                ));
            }
        }
        Ok(())
    }

    /// Open failover samples (shard, cause).
    pub fn open_failovers(&self) -> impl Iterator<Item = (&ShardRef, Cause)> {
        self.failovers.iter().map(|(s, f)| (s, f.cause))
    }

    /// A worker joined at `now`; `asserted` when no fault was active.
    pub fn open_join(&mut self, now: Micros, proc: ProcId, owner: Owner, asserted: bool) {
        self.joins.push(OpenJoin {
            proc,
            owner,
            at: now,
            asserted,
        });
    }

    /// Joined workers that reach their `fair` share (of their application)
    /// close their sample; an asserted one
    /// past [`JOIN_BOUND`] is a violation. `running` says whether a process
    /// incarnation still runs (a departed joiner's sample is dropped).
    pub fn check_joins(
        &mut self,
        now: Micros,
        fair: impl Fn(ProcId) -> usize,
        held: impl Fn(&Owner) -> usize,
        running: impl Fn(ProcId) -> bool,
    ) -> Check {
        let mut result = Ok(());
        let samples = &mut self.join_samples;
        self.joins.retain(|j| {
            if !running(j.proc) {
                return false;
            }
            let fair = fair(j.proc);
            let h = held(&j.owner);
            if h >= fair {
                samples.push((j.asserted, now - j.at));
                return false;
            }
            if j.asserted && now > j.at + JOIN_BOUND && result.is_ok() {
                result = Err(violation(
                    now,
                    "join-bound",
                    format!(
                        "{} joined {}ms ago with no fault active and holds {h}, below its fair share {fair} (bound {}ms; censored)",
                        j.owner,
                        ms(now - j.at),
                        ms(JOIN_BOUND)
                    ),
                ));
            }
            true
        });
        result
    }

    /// The shards due progress now (held by a healthy worker, readable):
    /// starts their clocks, forgets the others, and fails a clock past
    /// [`STALL_BOUND`].
    pub fn check_stalls(
        &mut self,
        now: Micros,
        due: impl IntoIterator<Item = (Owner, ShardRef)>,
    ) -> Check {
        let due: BTreeSet<(Owner, ShardRef)> = due.into_iter().collect();
        self.watch.retain(|k, _| due.contains(k));
        for k in due {
            let since = *self.watch.entry(k.clone()).or_insert(now);
            if now > since + STALL_BOUND {
                return Err(violation(
                    now,
                    "stall",
                    format!(
                        "{} held {} while healthy for {}ms without a delivery or a caught-up read (bound {}ms)",
                        k.0,
                        k.1,
                        ms(now - since),
                        ms(STALL_BOUND)
                    ),
                ));
            }
        }
        Ok(())
    }

    /// A subscription of `owner` went silent at `now`: every shard it
    /// holds is due progress within [`STALL_BOUND`] (the idle watchdog plus
    /// backoff) of this instant, whatever came before (a second silence in
    /// a row costs a second watchdog). Every shard, not only the silent
    /// one: the silent read keeps its pool reservation until the watchdog
    /// cancels it, and with a small budget the worker's other readers wait
    /// for that room.
    pub fn silenced(&mut self, now: Micros, owner: &Owner) {
        self.last_silence.insert(owner.clone(), now);
        for (k, t) in self.watch.iter_mut().filter(|(k, _)| k.0 == *owner) {
            *t = (*t).max(now);
            self.recovering.insert(k.clone());
        }
    }

    /// A fault hit a subscription of `owner` to `shard` (it broke, or
    /// SubscribeToShard failed) at `now`. While the shard recovers from a
    /// silence (its own or a sibling's), the resubscription failing costs
    /// its own backoff and the 5 s ResourceInUse hold-off: the clock
    /// restarts here.
    pub fn subscription_fault(&mut self, now: Micros, owner: &Owner, shard: &ShardRef) {
        let k = (owner.clone(), shard.clone());
        // A shard not due at the silence (its worker briefly unhealthy)
        // recovers from it all the same.
        let recent = self
            .last_silence
            .get(owner)
            .is_some_and(|&t| now < t + STALL_BOUND);
        if recent || self.recovering.contains(&k) {
            if let Some(t) = self.watch.get_mut(&k) {
                *t = (*t).max(now);
            }
        }
    }

    /// `owner` lost its lease on `shard`: that hold is over, and a later
    /// one (the shard taken again, after a self-fence for instance) starts
    /// its own clock, however briefly the shard was not held (a loss and a
    /// take between two checks; swarm seed 10405: a worker self-fenced by
    /// a DynamoDB fault took its shard back 0.35 s later and was held to
    /// the clock of a silence 30 s before).
    pub fn hold_ended(&mut self, owner: &Owner, shard: &ShardRef) {
        let k = (owner.clone(), shard.clone());
        self.watch.remove(&k);
        self.recovering.remove(&k);
    }

    /// `owner` made progress on `shard`.
    pub fn progress(&mut self, now: Micros, owner: &Owner, shard: &ShardRef) {
        let k = (owner.clone(), shard.clone());
        if let Some(t) = self.watch.get_mut(&k) {
            *t = now;
        }
        self.recovering.remove(&k);
    }

    /// A forced take of `shard` from `owner` (process `proc`, which still
    /// held it under `token` and was not fenced at its last step) was
    /// applied at `now`: check its next step.
    pub fn forced_take(
        &mut self,
        now: Micros,
        proc: ProcId,
        owner: Owner,
        shard: ShardRef,
        token: FencingToken,
        taker: Owner,
    ) {
        self.fences.push(FenceCheck {
            proc,
            owner,
            shard,
            token,
            taker,
            at: now,
        });
    }

    /// Whether a forced take waits on process `proc`'s next step.
    pub fn fence_pending(&self, proc: ProcId) -> bool {
        self.fences.iter().any(|f| f.proc == proc)
    }

    /// Process `proc` just stepped at `now`: after a forced take it must be
    /// fenced or no longer hold the taken (shard, token).
    pub fn check_fence(
        &mut self,
        now: Micros,
        proc: ProcId,
        fenced: bool,
        holds: impl Fn(&ShardRef, FencingToken) -> bool,
    ) -> Check {
        let mut result = Ok(());
        self.fences.retain(|f| {
            if f.proc != proc {
                return true;
            }
            if !fenced && holds(&f.shard, f.token) && result.is_ok() {
                result = Err(violation(
                    now,
                    "fencing-order",
                    format!(
                        "{} took {} from {} (tok{}) {}ms ago, yet {} is not fenced and still reads it: it could deliver after the take",
                        f.taker,
                        f.shard,
                        f.owner,
                        f.token.0,
                        ms(now - f.at),
                        f.owner
                    ),
                ));
            }
            false
        });
        result
    }

    /// The run ended at `now`: an asserted sample still open is censored.
    pub fn end(&self, now: Micros) -> Check {
        if let Some((shard, f)) = self.failovers.iter().find(|(_, f)| f.cause.bounded()) {
            return Err(violation(
                now,
                "failover-bound",
                format!(
                    "{shard} of crashed {} not read by another worker when the run ended {}ms after the crash (censored)",
                    f.from,
                    ms(now - f.at)
                ),
            ));
        }
        if let Some(j) = self.joins.iter().find(|j| j.asserted) {
            return Err(violation(
                now,
                "join-bound",
                format!(
                    "{} joined {}ms before the run ended and never held its fair share (censored)",
                    j.owner,
                    ms(now - j.at)
                ),
            ));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use kinesin_core::ids::{ShardId, StreamId};

    fn shard(i: u32) -> ShardRef {
        ShardRef::new(StreamId::new("s"), ShardId::new(format!("shardId-{i:012}")))
    }

    fn survivors() -> BTreeSet<ProcId> {
        [(1, 1)].into_iter().collect()
    }

    #[test]
    fn failover_past_the_bound_with_a_survivor_fails() {
        let mut b = Bounds::default();
        let (a, c) = (Owner::new("w0", 1), Owner::new("w1", 1));
        b.open_failover(
            0,
            shard(0),
            a.clone(),
            Cause::CrashWithSurvivor,
            survivors(),
        );
        assert!(b.check_failovers(FAILOVER_BOUND).is_ok());
        let v = b.check_failovers(FAILOVER_BOUND + 1).unwrap_err();
        assert_eq!(v.oracle, "failover-bound");
        let v = b.read(FAILOVER_BOUND + 1, &shard(0), &c).unwrap_err();
        assert_eq!(v.oracle, "failover-bound");
        assert_eq!(
            b.failover_samples,
            vec![(Cause::CrashWithSurvivor, FAILOVER_BOUND + 1)]
        );
    }

    #[test]
    fn failover_without_survivor_is_measured_not_asserted() {
        let mut b = Bounds::default();
        let (a, c) = (Owner::new("w0", 1), Owner::new("w1", 1));
        b.open_failover(
            0,
            shard(0),
            a.clone(),
            Cause::CrashWithSurvivor,
            survivors(),
        );
        b.unhealthy((1, 1));
        assert!(b.check_failovers(60 * SEC).is_ok());
        assert!(b.end(60 * SEC).is_ok());
        let got = b.read(60 * SEC, &shard(0), &c).unwrap();
        assert_eq!(got.map(|g| g.0), Some(Cause::CrashNoSurvivor));
        b.open_failover(
            0,
            shard(1),
            a.clone(),
            Cause::CrashWithSurvivor,
            BTreeSet::new(),
        );
        assert_eq!(
            b.open_failovers().next().map(|x| x.1),
            Some(Cause::CrashNoSurvivor)
        );
    }

    #[test]
    fn open_asserted_failover_at_run_end_is_censored() {
        let mut b = Bounds::default();
        b.open_failover(
            0,
            shard(0),
            Owner::new("w0", 1),
            Cause::CrashWithSurvivor,
            survivors(),
        );
        assert_eq!(b.end(SEC).unwrap_err().oracle, "failover-bound");
    }

    #[test]
    fn old_owner_reading_again_drops_a_stall_sample() {
        let mut b = Bounds::default();
        let a = Owner::new("w0", 1);
        b.open_failover(0, shard(0), a.clone(), Cause::Stall, BTreeSet::new());
        assert_eq!(b.read(SEC, &shard(0), &a).unwrap(), None);
        assert!(b.failover_samples.is_empty());
    }

    #[test]
    fn joiner_below_fair_share_past_the_bound_fails() {
        let mut b = Bounds::default();
        let o = Owner::new("w3", 1);
        b.open_join(0, (3, 1), o.clone(), true);
        assert!(b.check_joins(JOIN_BOUND, |_| 2, |_| 1, |_| true).is_ok());
        let v = b
            .check_joins(JOIN_BOUND + 1, |_| 2, |_| 1, |_| true)
            .unwrap_err();
        assert_eq!(v.oracle, "join-bound");
        assert_eq!(b.end(JOIN_BOUND + 1).unwrap_err().oracle, "join-bound");
        assert!(b
            .check_joins(JOIN_BOUND + 2, |_| 2, |_| 2, |_| true)
            .is_ok());
        assert_eq!(b.join_samples, vec![(true, JOIN_BOUND + 2)]);
    }

    #[test]
    fn joiner_during_a_fault_is_not_asserted() {
        let mut b = Bounds::default();
        b.open_join(0, (3, 1), Owner::new("w3", 1), true);
        b.disrupted();
        assert!(b
            .check_joins(10 * JOIN_BOUND, |_| 2, |_| 0, |_| true)
            .is_ok());
        assert!(b.end(10 * JOIN_BOUND).is_ok());
    }

    #[test]
    fn held_shard_without_progress_past_the_bound_fails() {
        let mut b = Bounds::default();
        let k = (Owner::new("w0", 1), shard(0));
        assert!(b.check_stalls(0, [k.clone()]).is_ok());
        b.progress(10 * SEC, &k.0, &k.1);
        assert!(b.check_stalls(10 * SEC + STALL_BOUND, [k.clone()]).is_ok());
        let v = b
            .check_stalls(10 * SEC + STALL_BOUND + 1, [k.clone()])
            .unwrap_err();
        assert_eq!(v.oracle, "stall");
        // Not due for a moment (unhealthy): the clock starts again.
        assert!(b.check_stalls(100 * SEC, []).is_ok());
        assert!(b.check_stalls(101 * SEC, [k]).is_ok());
    }

    #[test]
    fn a_lease_lost_and_taken_back_between_two_checks_starts_a_new_stall_clock() {
        let mut b = Bounds::default();
        let k = (Owner::new("w0", 1), shard(0));
        assert!(b.check_stalls(0, [k.clone()]).is_ok());
        // Lost (self-fenced) and taken back before the next check.
        b.hold_ended(&k.0, &k.1);
        assert!(b.check_stalls(30 * SEC, [k.clone()]).is_ok());
        assert!(b.check_stalls(30 * SEC + STALL_BOUND, [k.clone()]).is_ok());
        assert!(b.check_stalls(30 * SEC + STALL_BOUND + 1, [k]).is_err());
    }

    #[test]
    fn a_silence_restarts_the_stall_clock_of_every_shard_of_its_worker_until_progress() {
        let mut b = Bounds::default();
        let w0 = Owner::new("w0", 1);
        let (a, c) = ((w0.clone(), shard(0)), (w0.clone(), shard(1)));
        let other = (Owner::new("w1", 1), shard(2));
        let all = || [a.clone(), c.clone(), other.clone()];
        assert!(b.check_stalls(0, all()).is_ok());
        b.silenced(20 * SEC, &w0);
        // w0's shards are due progress within the bound of the silence;
        // w1's clock did not move.
        let v = b.check_stalls(STALL_BOUND + 1, all()).unwrap_err();
        assert!(v.message.starts_with("w1"), "{}", v.message);
        assert!(b
            .check_stalls(STALL_BOUND + 1, [a.clone(), c.clone()])
            .is_ok());
        // A failed resubscription while recovering restarts its clock...
        b.subscription_fault(40 * SEC, &a.0, &a.1);
        assert!(b
            .check_stalls(20 * SEC + STALL_BOUND + 1, [a.clone()])
            .is_ok());
        // ...but not once the shard progressed.
        b.progress(41 * SEC, &a.0, &a.1);
        b.subscription_fault(56 * SEC, &a.0, &a.1);
        assert!(b.check_stalls(41 * SEC + STALL_BOUND + 1, [a]).is_err());
    }

    #[test]
    fn old_owner_still_reading_after_a_forced_take_fails() {
        let mut b = Bounds::default();
        let (a, c) = (Owner::new("w0", 1), Owner::new("w1", 1));
        b.forced_take(SEC, (0, 1), a.clone(), shard(0), FencingToken(3), c.clone());
        assert!(b.fence_pending((0, 1)));
        assert!(b.check_fence(2 * SEC, (1, 1), false, |_, _| true).is_ok());
        let v = b
            .check_fence(2 * SEC, (0, 1), false, |_, t| t == FencingToken(3))
            .unwrap_err();
        assert_eq!(v.oracle, "fencing-order");
        assert!(!b.fence_pending((0, 1)));
        b.forced_take(SEC, (0, 1), a, shard(0), FencingToken(3), c);
        assert!(b.check_fence(2 * SEC, (0, 1), true, |_, _| true).is_ok());
    }
}

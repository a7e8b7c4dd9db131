//! The fleet: worker processes coming and going, and the run's phases
//! that bring it to a graceful end.
//!
//! Models: a process ([`Proc`]) is a host running one worker at a time:
//! its clock (offset and drift, drawn when it joins) and wall-clock skew,
//! its incarnation, its sink's stall, what its runtime keeps (payloads per
//! chunk, unacked batches, open subscriptions and polls), and whether it is
//! paused (a stall: inputs and sink answers queue until it resumes, then
//! reach it in an adversarial order). Ops ([`Op`]) join, crash, restart,
//! stall, partition, sink-stall and shut processes down; the fault clock
//! draws them at the swarm's rates during the fault phase. The heal phase
//! ends every fault ([`crate::net::Net::heal`]), restarts a process if none
//! is live, and must see every shard held by a live worker and every
//! record acknowledged within the bound; then every process shuts down
//! gracefully and no lease row may keep an owner.
//!
//! Applications (`Params::apps`) share the one lease table, each its own
//! processes and streams: a process belongs to one application for good
//! (a join goes to the application with the fewest running processes),
//! the heal phase keeps one live process per application, and balancing
//! (the fair share), joins and failover survivors are judged per
//! application.
//!
//! AWS (and KCL) rules encoded: a crash loses the process's memory but not
//! the lease table; a restarted process is a new incarnation (a new owner
//! to the table) and its heartbeat row overwrites its predecessor's; a
//! graceful shutdown releases what it holds.
//!
//! Invariants: a process index is stable for the whole run (ops name
//! processes by index, wrapping around the fleet); an event addressed to
//! an older incarnation is dropped; a departed or crashed process holds
//! nothing (`leave` clears its runtime state, subscriptions and oracle
//! holdings); random draws happen in the same order as when this code was
//! part of `world.rs` (the trace hash pins it).
//!
//! Imports: `kinesin_core` (config, ids, worker), the world it extends
//! ([`World`] and its event type), [`crate::net`] for partitions and the
//! scenario's [`Op`]. It is `impl World`: the lifecycle needs the queue,
//! the oracles and the lease table as much as the processes.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use kinesin_core::config::{Batching, Config, EfoConsumer, Redelivery, Retrieval, StartFrom};
use kinesin_core::ids::{BatchId, ChunkId, FencingToken, OpId, Owner, ShardRef, StreamId, SubId};
use kinesin_core::io::Input;
use kinesin_core::sequence::Checkpoint;
use kinesin_core::worker::Worker;

use crate::bounds::{Cause, ProcId, FAILOVER_TIME};
use crate::net::Service;
use crate::oracle::{Check, Violation};
use crate::scenario::Op;
use crate::sched::{between, exp, Clock, Micros, MS, SEC};
use crate::world::{dur, Ev, Phase, World, CONSUMER, QUARANTINE, UNIX_BASE_MS};

/// How long after its last shutdown the final phase may take.
const SHUTDOWN_BOUND: Micros = 30 * SEC;

/// Poison scenario: deliveries after which a nacked batch is dead-lettered.
pub(crate) const MAX_DELIVERIES: u32 = 3;
/// Every live worker holds its fair share this long after the heal began:
/// the failover time (10 s: leases of dead workers expire), two rebalance
/// periods (30 s each) and 5 s for reads and hand-offs in flight.
const BALANCE_BOUND: Micros = (10 + 2 * 30 + 5) * SEC;

/// Whether a process runs a worker.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum ProcState {
    /// Its worker runs (possibly paused or shutting down).
    Running,
    /// It died, or has joined and not started yet.
    Crashed,
    /// Its worker completed a graceful shutdown.
    Left,
}

/// Something that reached a paused process and waits for it.
pub(crate) enum Pending {
    Input(Input, Option<(ChunkId, usize, Vec<u64>)>),
    Sink(BatchId, bool),
}

/// One worker process: a host with its clocks, its current incarnation's
/// worker, and the runtime state a real runtime would keep for it.
pub(crate) struct Proc {
    pub(crate) name: String,
    /// The application it belongs to (`Params::apps`): it consumes that
    /// application's streams.
    pub(crate) app: usize,
    pub(crate) inc: u64,
    pub(crate) clock: Clock,
    pub(crate) wall_skew_ms: i64,
    pub(crate) state: ProcState,
    pub(crate) worker: Option<Worker>,
    pub(crate) paused_until: Option<Micros>,
    pub(crate) backlog: Vec<Pending>,
    pub(crate) sink_stall_until: Micros,
    /// The latest ack a sink stall pushed back (already scheduled: the heal
    /// ends the stall but not the acks it delayed).
    pub(crate) acks_held_until: Micros,
    /// Payload (user record ids) per chunk, with the shard index.
    pub(crate) chunks: BTreeMap<ChunkId, (usize, Vec<u64>)>,
    /// Delivered batches not yet acked: shard index, token, ids.
    pub(crate) batches: BTreeMap<BatchId, (usize, FencingToken, Vec<u64>)>,
    pub(crate) timer: Option<(Micros, u64)>,
    pub(crate) timer_gen: u64,
    pub(crate) last_local: Micros,
    pub(crate) spin: (Micros, u32),
    pub(crate) timer_why: &'static str,
    /// Open subscriptions per shard (one-reader oracle).
    pub(crate) subs: BTreeMap<ShardRef, SubId>,
    /// Outstanding GetRecords per shard.
    pub(crate) polls: BTreeMap<ShardRef, OpId>,
    pub(crate) sub_shard: BTreeMap<SubId, ShardRef>,
    pub(crate) shutting_down: bool,
    /// When its current incarnation started (the balancing bound of the
    /// heal phase runs from the later of this and the heal's start).
    pub(crate) started_at: Micros,
}

impl Proc {
    /// A process that has just joined: incarnation 1, not yet started.
    fn new(name: String, app: usize, clock: Clock, wall_skew_ms: i64) -> Self {
        Proc {
            name,
            app,
            inc: 1,
            clock,
            wall_skew_ms,
            state: ProcState::Crashed,
            worker: None,
            paused_until: None,
            backlog: Vec::new(),
            sink_stall_until: 0,
            acks_held_until: 0,
            chunks: BTreeMap::new(),
            batches: BTreeMap::new(),
            timer: None,
            timer_gen: 0,
            last_local: 0,
            spin: (0, 0),
            timer_why: "",
            subs: BTreeMap::new(),
            polls: BTreeMap::new(),
            sub_shard: BTreeMap::new(),
            shutting_down: false,
            started_at: 0,
        }
    }

    /// The owner its worker (or its next worker) writes to the table.
    pub(crate) fn owner(&self) -> Owner {
        match &self.worker {
            // The same value, without allocating the worker id again.
            Some(w) => w.owner().clone(),
            None => Owner::new(&self.name, self.inc),
        }
    }
}

impl World {
    // ----- lifecycle -----------------------------------------------------------

    /// The streams application `app` consumes.
    pub(crate) fn app_streams(&self, app: usize) -> Vec<StreamId> {
        let k = self.p.streams_per_app.max(1);
        (app * k..(app + 1) * k)
            .map(|s| self.kinesis.streams[s].clone())
            .collect()
    }

    /// The application that consumes `stream`.
    pub(crate) fn app_of(&self, stream: &StreamId) -> Option<usize> {
        let s = self.kinesis.stream_index(stream)?;
        Some(s / self.p.streams_per_app.max(1))
    }

    fn config(&mut self, app: usize, name: &str, inc: u64) -> Config {
        let retrieval = if self.p.efo {
            Retrieval::Efo {
                consumer: EfoConsumer::Name(CONSUMER.into()),
            }
        } else {
            Retrieval::polling()
        };
        let streams = self.app_streams(app);
        let mut c = Config::new(streams, Owner::new(name, inc), retrieval);
        c.seed = self.rng.next_u64();
        c.batching = Batching {
            count: self.p.batch_count,
            ..Batching::default()
        };
        c.checkpoint_limit = self.p.checkpoint_limit;
        c.pool_records = self.p.pool_records;
        c.pool_bytes = self.p.pool_bytes;
        c.max_lease_writes_in_flight = self.p.max_lease_writes;
        c.max_read_calls_in_flight = self.p.max_read_calls;
        if self.p.poison_every != 0 {
            c.redelivery = Redelivery {
                backoff: Duration::from_millis(100),
                backoff_cap: Duration::from_secs(1),
                max_deliveries: Some(MAX_DELIVERIES),
            };
        }
        if self.p.start_latest {
            c.start_from = StartFrom::Latest;
        }
        if let Some(t) = self.p.start_at_us {
            c.start_from = StartFrom::Timestamp {
                unix_ms: UNIX_BASE_MS + t / MS,
            };
        }
        c
    }

    /// Start a worker in process `p` (its current incarnation).
    pub(crate) fn start(&mut self, p: usize) -> Check {
        let inc = self.procs[p].inc;
        let name = self.procs[p].name.clone();
        let config = self.config(self.procs[p].app, &name, inc);
        let pr = &mut self.procs[p];
        let local = pr.clock.local(self.now).max(pr.last_local);
        pr.last_local = local;
        let unix = (UNIX_BASE_MS + self.now / MS).saturating_add_signed(pr.wall_skew_ms);
        let w = Worker::new(config, self.epoch + dur(local), unix).map_err(|e| Violation {
            at: self.now,
            oracle: "config",
            message: e.to_string(),
        })?;
        pr.worker = Some(w);
        pr.state = ProcState::Running;
        pr.shutting_down = false;
        pr.started_at = self.now;
        self.bounds.restarted(self.now, &name);
        self.trace
            .line(self.now, format_args!("{} start", Owner::new(&name, inc)));
        self.after_step(p)
    }

    /// The process is gone (shut down or crashed): forget its state.
    pub(crate) fn leave(&mut self, p: usize) {
        let pr = &mut self.procs[p];
        let owner = pr.owner();
        let inc = pr.inc;
        pr.worker = None;
        pr.timer = None;
        pr.paused_until = None;
        pr.backlog.clear();
        pr.chunks.clear();
        pr.batches.clear();
        pr.subs.clear();
        pr.polls.clear();
        pr.sub_shard.clear();
        self.oracles.died(&owner);
        self.kinesis.close_subs(|k| k.0 == p && k.1 == inc);
        self.sub_ids.retain(|k, _| !(k.0 == p && k.1 == inc));
        self.early_pulls.retain(|k, _| !(k.0 == p && k.1 == inc));
    }

    /// A stalled process runs again: its timer and what queued while it
    /// was paused reach it, in an adversarial order.
    pub(crate) fn resume(&mut self, p: usize, inc: u64) -> Check {
        let pr = &mut self.procs[p];
        if pr.inc != inc || pr.paused_until.is_none() {
            return Ok(());
        }
        pr.paused_until = None;
        let backlog = std::mem::take(&mut pr.backlog);
        let owner = pr.owner();
        self.trace.line(
            self.now,
            format_args!("{owner} resumes with {} pending", backlog.len()),
        );
        // Adversarial order: a runtime may see queued inputs before its timer.
        let timer_first = self.rng.chance(0.5);
        if timer_first {
            self.step(p, |w, now| w.handle_timeout(now))?;
        }
        for item in backlog {
            if self.procs[p].worker.is_none() {
                break;
            }
            match item {
                Pending::Input(input, payload) => self.feed(p, input, payload)?,
                Pending::Sink(batch, ack) => self.sink_done(p, batch, ack)?,
            }
        }
        self.step(p, |w, now| w.handle_timeout(now))
    }

    /// The fault clock: draw the next fault op at the swarm's rates, apply
    /// it, and schedule the next tick (until the heal phase).
    pub(crate) fn fault_tick(&mut self) -> Check {
        if self.phase != Phase::Faults {
            return Ok(());
        }
        let rates = self.p.faults.op_rates();
        let total: f64 = rates.iter().sum();
        if total <= 0.0 {
            return Ok(());
        }
        let mut pick = self.rng.unit_f64() * total;
        let mut kind = 0;
        for (i, r) in rates.iter().enumerate() {
            if pick < *r {
                kind = i;
                break;
            }
            pick -= r;
        }
        let n = self.procs.len().max(1);
        let w = self.rng.below(n as u64) as usize;
        let f = 10 * SEC;
        let op = match kind {
            0 => Op::Crash(w),
            1 => Op::Stall(w, between(&mut self.rng, SEC, 2 * f + 5 * SEC)),
            2 => Op::CutDynamo(w, between(&mut self.rng, SEC, 2 * f)),
            3 => Op::CutKinesis(w, between(&mut self.rng, SEC, 2 * f)),
            4 => Op::SinkStall(w, between(&mut self.rng, SEC, 60 * SEC)),
            5 => Op::Shutdown(w),
            6 => Op::Join,
            7 => Op::Split(self.rng.below(64) as usize),
            8 => Op::Merge(self.rng.below(64) as usize),
            9 => Op::CutDynamoOneWay(w, between(&mut self.rng, SEC, 4 * f), self.rng.chance(0.5)),
            10 => Op::Impostor(w),
            _ => Op::RecreateStream(w),
        };
        self.apply(op)?;
        let mean = (3600.0 * SEC as f64 / total) as Micros;
        let next = self.now + exp(&mut self.rng, mean).max(MS);
        if next < self.heal_start {
            self.q.push(next, Ev::FaultTick);
        }
        Ok(())
    }

    pub(crate) fn running(&self, p: usize) -> bool {
        self.procs
            .get(p)
            .is_some_and(|pr| pr.state == ProcState::Running && pr.worker.is_some())
    }

    // ----- ops ---------------------------------------------------------------

    /// Apply one fault or fleet change.
    pub(crate) fn apply(&mut self, op: Op) -> Check {
        let n = self.procs.len().max(1);
        self.trace.line(self.now, format_args!("op {op:?}"));
        match op {
            Op::Crash(w) => {
                let p = w % n;
                if !self.running(p) {
                    return Ok(());
                }
                let app = self.procs[p].app;
                let survivors: BTreeSet<ProcId> = (0..self.procs.len())
                    .filter(|&q| q != p && self.procs[q].app == app && self.healthy(q))
                    .map(|q| (q, self.procs[q].inc))
                    .collect();
                self.open_failovers(p, Cause::CrashWithSurvivor, survivors);
                self.disrupt(p, self.now);
                self.procs[p].state = ProcState::Crashed;
                self.leave(p);
                if self.faults_on() && self.rng.chance(self.p.faults.restart_prob) {
                    let at = self.now + between(&mut self.rng, 5 * SEC, 60 * SEC);
                    self.q.push(at, Ev::Op(Op::Restart(p)));
                }
            }
            Op::Restart(w) => {
                let p = w % n;
                if self.phase == Phase::Closing {
                    return Ok(());
                }
                if self
                    .procs
                    .get(p)
                    .is_none_or(|pr| pr.state == ProcState::Running)
                {
                    return Ok(());
                }
                // A restart is later than every earlier process of its
                // worker id (an impostor's included), as the driver's
                // clock-based incarnation is.
                let name = &self.procs[p].name;
                let latest = self.procs.iter().filter(|q| q.name == *name).map(|q| q.inc);
                self.procs[p].inc = latest.max().unwrap_or(0) + 1;
                self.start(p)?;
                self.open_join(p);
            }
            Op::Stall(w, d) => {
                let p = w % n;
                if !self.running(p) || self.procs[p].paused_until.is_some() {
                    return Ok(());
                }
                self.open_failovers(p, Cause::Stall, BTreeSet::new());
                self.disrupt(p, self.now + d);
                self.procs[p].paused_until = Some(self.now + d);
                let inc = self.procs[p].inc;
                self.q.push(self.now + d, Ev::Resume { p, inc });
            }
            Op::CutDynamo(w, d) => {
                if w % n < self.procs.len() {
                    if self.running(w % n) {
                        self.open_failovers(w % n, Cause::Partition, BTreeSet::new());
                    }
                    self.disrupt(w % n, self.now + d);
                    self.net.cut(w % n, Service::Dynamo, self.now + d);
                }
            }
            Op::CutKinesis(w, d) => {
                if w % n < self.procs.len() {
                    self.disrupt(w % n, self.now + d);
                    self.net.cut(w % n, Service::Kinesis, self.now + d);
                }
            }
            Op::CutDynamoOneWay(w, d, reads) => {
                if w % n < self.procs.len() {
                    if self.running(w % n) && !reads {
                        // No heartbeat renews: its leases fail over.
                        self.open_failovers(w % n, Cause::Partition, BTreeSet::new());
                    }
                    self.disrupt(w % n, self.now + d);
                    self.net.cut_one_way(w % n, reads, self.now + d);
                }
            }
            Op::SinkStall(w, d) => {
                if w % n < self.procs.len() {
                    self.disrupt(w % n, self.now + d);
                    let pr = &mut self.procs[w % n];
                    pr.sink_stall_until = pr.sink_stall_until.max(self.now + d);
                }
            }
            Op::Shutdown(w) => {
                let p = w % n;
                if !self.running(p)
                    || self.procs[p].shutting_down
                    || self.procs[p].paused_until.is_some()
                {
                    return Ok(());
                }
                if self.phase != Phase::Closing {
                    self.open_failovers(p, Cause::Shutdown, BTreeSet::new());
                    self.disrupt(p, self.now);
                }
                self.procs[p].shutting_down = true;
                self.step(p, |w, now| w.shutdown(now))?;
                if self.faults_on() && self.rng.chance(self.p.faults.restart_prob) {
                    let at = self.now + between(&mut self.rng, 20 * SEC, 120 * SEC);
                    self.q.push(at, Ev::Op(Op::Restart(p)));
                }
            }
            Op::Join if self.phase == Phase::Closing => {}
            Op::Join => {
                let p = self.procs.len();
                // The application with the fewest running processes.
                let app = (0..self.p.apps.max(1))
                    .min_by_key(|&a| {
                        (0..self.procs.len())
                            .filter(|&q| self.procs[q].app == a && self.running(q))
                            .count()
                    })
                    .unwrap_or(0);
                let offset = self.rng.below(3600 * SEC);
                let dmax = self.p.faults.drift_ppm_max.max(0) as u64;
                let drift = self.rng.below(2 * dmax + 1) as i64 - dmax as i64;
                let skew = self.rng.below(4001) as i64 - 2000;
                let clock = Clock {
                    offset_us: offset,
                    drift_ppm: drift,
                };
                self.procs
                    .push(Proc::new(format!("w{p}"), app, clock, skew));
                self.start(p)?;
                if self.now > 0 && self.procs.len() > self.p.workers * self.p.apps.max(1) {
                    self.open_join(p);
                }
            }
            Op::Split(i) => self.split(i)?,
            Op::RecreateStream(s) => self.recreate_stream(s)?,
            Op::Merge(i) => self.merge(i)?,
            Op::Impostor(w) => {
                let p = w % n;
                if !self.running(p) || self.phase == Phase::Closing {
                    return Ok(());
                }
                // The original is doomed (it stops at its next heartbeat
                // read or put): a fault for it, not a fleet failover.
                self.disrupt(p, self.now + 20 * SEC);
                let q = self.procs.len();
                let offset = self.rng.below(3600 * SEC);
                let skew = self.rng.below(4001) as i64 - 2000;
                let clock = Clock {
                    offset_us: offset,
                    drift_ppm: 0,
                };
                let mut pr = Proc::new(self.procs[p].name.clone(), self.procs[p].app, clock, skew);
                // Far above every incarnation of this id so far (the
                // original's restarts stay earlier), and never one an
                // earlier impostor of the same id took: two processes
                // started apart never share an incarnation (seed 10496).
                let name = &self.procs[p].name;
                pr.inc = self
                    .procs
                    .iter()
                    .filter(|o| &o.name == name)
                    .map(|o| o.inc)
                    .max()
                    .unwrap_or(0)
                    + 1_000;
                self.procs.push(pr);
                self.start(q)?;
            }
        }
        Ok(())
    }

    /// Joined workers that reached fair share: record the time it took;
    /// an asserted join past its bound is a violation.
    pub(crate) fn check_joins(&mut self) -> Check {
        let fair: Vec<usize> = (0..self.p.apps.max(1))
            .map(|app| {
                let live = (0..self.procs.len())
                    .filter(|&p| {
                        self.procs[p].app == app && self.running(p) && !self.procs[p].shutting_down
                    })
                    .count()
                    .max(1);
                self.active_leases(app) / live
            })
            .collect();
        let (oracles, procs) = (&self.oracles, &self.procs);
        self.bounds.check_joins(
            self.now,
            |(p, _)| procs.get(p).map_or(0, |pr| fair[pr.app]),
            |o| oracles.held_by(o),
            |(p, inc)| {
                procs.get(p).is_some_and(|pr| {
                    pr.inc == inc
                        && pr.state == ProcState::Running
                        && pr.worker.is_some()
                        && !pr.shutting_down
                })
            },
        )
    }

    // ----- timed bounds (see `crate::bounds`) -----------------------------------

    /// Whether process `p` is healthy, as the timed bounds define it: it
    /// runs, is not paused and not shutting down, reaches both DynamoDB and
    /// Kinesis, its sink acknowledges (no sink stall, and no ack a past
    /// stall delayed still pending, so its pool drains), and it has not
    /// fenced itself. For a failover survivor also no request of it met an
    /// injected fault during the window (`request_fault`): F + 2 s has no
    /// room for retries.
    pub(crate) fn healthy(&self, p: usize) -> bool {
        let Some(pr) = self.procs.get(p) else {
            return false;
        };
        self.running(p)
            && !pr.shutting_down
            && pr.paused_until.is_none()
            && pr.sink_stall_until <= self.now
            && pr.acks_held_until <= self.now
            && !self.net.is_cut(self.now, p, Service::Dynamo)
            && !self.net.is_cut(self.now, p, Service::Kinesis)
            && pr.worker.as_ref().is_some_and(|w| !w.leases().is_fenced())
            && !self.stuck.hanging((p, pr.inc), self.now)
    }

    /// A request of process `p` (incarnation `inc`) met an injected fault
    /// (error, throttle, lost response, latency spike): it is no failover
    /// survivor for the windows open now.
    pub(crate) fn request_fault(&mut self, p: usize, inc: u64) {
        self.bounds.unhealthy((p, inc));
        self.stuck.fault((p, inc), self.now);
    }

    /// The operator stops process `p` (`World::operator_clears_stale_rows`):
    /// a fault for the timed bounds, as a crash is.
    pub(crate) fn disrupt_for_operator(&mut self, p: usize) {
        self.disrupt(p, self.now);
    }

    /// A fault hits process `p` until `until`: it is no failover survivor
    /// any more, and open joins are not fault-free.
    fn disrupt(&mut self, p: usize, until: Micros) {
        let inc = self.procs[p].inc;
        self.bounds.unhealthy((p, inc));
        self.stuck.fault((p, inc), until);
        self.bounds.disrupted();
        self.last_disruption = Some(self.last_disruption.unwrap_or(0).max(until));
    }

    /// Open a failover sample for every active row process `p` owns.
    fn open_failovers(&mut self, p: usize, cause: Cause, survivors: BTreeSet<ProcId>) {
        let owner = self.procs[p].owner();
        let shards: Vec<ShardRef> = self
            .dynamo
            .leases
            .iter()
            .filter(|(_, row)| {
                row.owner.as_ref() == Some(&owner) && row.checkpoint != Some(Checkpoint::ShardEnd)
            })
            .map(|(s, _)| s.clone())
            .collect();
        for shard in shards {
            // A survivor that quarantined the shard (it failed with a
            // recreated stream) cannot take it over before that ends.
            let able: BTreeSet<ProcId> = survivors
                .iter()
                .filter(|id| {
                    self.quarantines
                        .get(&(**id, shard.clone()))
                        .is_none_or(|until| self.now >= *until)
                })
                .copied()
                .collect();
            self.bounds
                .open_failover(self.now, shard, owner.clone(), cause, able);
        }
    }

    /// Whether no fault is active: the heal phase or a run without random
    /// faults, no process paused, cut or with a stalled sink, and no fault
    /// op within the last F (leases it freed have expired).
    fn fault_free(&self) -> bool {
        let f = &self.p.faults;
        let random = f.op_rates().iter().any(|r| *r > 0.0)
            || [
                f.dynamo_throttle,
                f.dynamo_error,
                f.dynamo_ambiguous,
                f.dynamo_late,
                f.dynamo_spike,
                f.kinesis_error,
                f.efo_stream_error,
                f.sink_nack,
            ]
            .iter()
            .any(|r| *r > 0.0);
        let heal = self.phase != Phase::Faults;
        let mut ended = self.last_disruption.unwrap_or(0);
        if heal {
            ended = ended.min(self.heal_start);
        }
        (heal || !random)
            && self
                .last_disruption
                .is_none_or(|_| self.now >= ended + FAILOVER_TIME)
            && (0..self.procs.len()).all(|p| {
                let pr = &self.procs[p];
                pr.paused_until.is_none()
                    && pr.sink_stall_until <= self.now
                    && !self.net.is_cut(self.now, p, Service::Dynamo)
                    && !self.net.is_cut(self.now, p, Service::Kinesis)
            })
    }

    /// Process `p` joined (or restarted): a join sample, asserted when no
    /// fault is active.
    fn open_join(&mut self, p: usize) {
        let asserted = self.p.check_liveness && self.fault_free();
        let (inc, owner) = (self.procs[p].inc, self.procs[p].owner());
        self.trace
            .line(self.now, format_args!("join {owner} asserted={asserted}"));
        self.bounds.open_join(self.now, (p, inc), owner, asserted);
    }

    /// Shards due progress: held (per the worker and the table) by a
    /// healthy worker, readable (every parent at SHARD_END or gone), not at
    /// SHARD_END and with no hand-off pending.
    fn due_progress(&self) -> Vec<(Owner, ShardRef)> {
        let mut due = Vec::new();
        for p in 0..self.procs.len() {
            if !self.healthy(p) {
                continue;
            }
            let Some(w) = self.procs[p].worker.as_ref() else {
                continue;
            };
            let owner = w.owner();
            let local = self.epoch + dur(self.procs[p].last_local);
            for (shard, token) in w.held_shards() {
                // Waiting for pool room its worker's other shards hold:
                // the sink is the bottleneck, not a hung read (seed 3100:
                // 9 shards, 4 MiB, events of KPL bombs read one at a time
                // in turn). Starvation is the heal bound's to catch.
                if w.waits_for_pool(&shard, local) {
                    continue;
                }
                let Some(row) = self.dynamo.leases.get(&shard) else {
                    continue;
                };
                let readable = row.parents.iter().all(|id| {
                    self.dynamo
                        .leases
                        .get(&ShardRef::new(shard.stream.clone(), id.clone()))
                        .is_none_or(|pr| pr.checkpoint == Some(Checkpoint::ShardEnd))
                });
                if row.owner.as_ref() == Some(owner)
                    && row.token == token
                    && row.checkpoint != Some(Checkpoint::ShardEnd)
                    && row.pending_owner.is_none()
                    && readable
                {
                    due.push((owner.clone(), shard));
                }
            }
        }
        due
    }

    /// Once a simulated second: survivors that stopped being healthy,
    /// censored failovers, joins and stalled shards.
    pub(crate) fn check_bounds(&mut self) -> Check {
        if self.now < self.next_bounds_check {
            return Ok(());
        }
        self.next_bounds_check = self.now + SEC;
        for p in 0..self.procs.len() {
            if !self.healthy(p) {
                self.bounds.unhealthy((p, self.procs[p].inc));
            }
        }
        self.bounds.check_failovers(self.now)?;
        self.check_joins()?;
        if self.p.check_liveness {
            let due = self.due_progress();
            self.bounds.check_stalls(self.now, due)?;
        }
        Ok(())
    }

    /// A Take of `shard` against `old` (token `token`) by `taker` was
    /// applied: unless it follows a hand-off request, `old` must be fenced
    /// by its next step (`fencing-order`).
    pub(crate) fn forced_take(
        &mut self,
        old: &Owner,
        taker: &Owner,
        shard: &ShardRef,
        token: FencingToken,
    ) {
        let Some(p) =
            (0..self.procs.len()).find(|&p| self.running(p) && self.procs[p].owner() == *old)
        else {
            return;
        };
        let w = self.procs[p].worker.as_ref().expect("running");
        if w.leases().is_fenced() || !w.held_shards().contains(&(shard.clone(), token)) {
            return;
        }
        self.bounds.forced_take(
            self.now,
            (p, self.procs[p].inc),
            old.clone(),
            shard.clone(),
            token,
            taker.clone(),
        );
    }

    /// After a step of process `p`: the fencing-order check of a forced
    /// take waiting on it.
    pub(crate) fn check_fence(&mut self, p: usize) -> Check {
        let id = (p, self.procs[p].inc);
        if !self.bounds.fence_pending(id) {
            return Ok(());
        }
        let Some(w) = self.procs[p].worker.as_ref() else {
            return Ok(());
        };
        let held = w.held_shards();
        self.bounds
            .check_fence(self.now, id, w.leases().is_fenced(), |s, t| {
                held.contains(&(s.clone(), t))
            })
    }

    // ----- phases ------------------------------------------------------------

    /// The heal phase begins: every fault ends, paused processes resume,
    /// and a process restarts (or joins) if none is live.
    pub(crate) fn heal(&mut self) -> Check {
        self.phase = Phase::Heal;
        self.net.heal();
        self.trace.line(self.now, format_args!("heal"));
        for p in 0..self.procs.len() {
            let pr = &mut self.procs[p];
            pr.sink_stall_until = 0;
            if pr.paused_until.is_some() {
                let inc = pr.inc;
                self.q.push(self.now, Ev::Resume { p, inc });
            }
        }
        for app in 0..self.p.apps.max(1) {
            let of_app = |p: &usize| self.procs[*p].app == app;
            let live = (0..self.procs.len())
                .filter(of_app)
                .filter(|&p| self.running(p) && !self.procs[p].shutting_down)
                .count();
            if live == 0 {
                let down = (0..self.procs.len())
                    .filter(of_app)
                    .find(|&p| !self.running(p));
                if let Some(p) = down {
                    self.apply(Op::Restart(p))?;
                } else {
                    // Joins the application with the fewest running.
                    self.apply(Op::Join)?;
                }
            }
        }
        self.q.push(self.now + SEC, Ev::HealCheck);
        Ok(())
    }

    /// Shards that are not yet held by a live worker or not caught up.
    fn lagging(&self) -> Vec<String> {
        let mut out = Vec::new();
        let live: Vec<Owner> = (0..self.procs.len())
            .filter(|&p| self.running(p) && !self.procs[p].shutting_down)
            .map(|p| self.procs[p].owner())
            .collect();
        for i in 0..self.kinesis.shards.len() {
            let sref = self.kinesis.shard_ref(i);
            let row = self.dynamo.leases.get(&sref);
            let ended = row.is_some_and(|r| r.checkpoint == Some(Checkpoint::ShardEnd))
                || self.dynamo.deleted.contains(&sref);
            let s = &self.kinesis.shards[i];
            if s.deleted {
                // Gone with its stream: its ShardId names a new shard.
                continue;
            }
            if ended {
                // A drained shard's row is collected once every child has
                // checkpointed (KCL's clean-up): rows do not pile up.
                let children_done = !s.children.is_empty()
                    && s.children.iter().all(|&c| {
                        let cref = self.kinesis.shard_ref(c);
                        self.dynamo.deleted.contains(&cref)
                            || self
                                .dynamo
                                .leases
                                .get(&cref)
                                .is_some_and(|r| r.checkpoint.is_some())
                    });
                if row.is_some_and(|r| r.owner.is_none()) && children_done {
                    out.push(format!(
                        "{sref}: drained and its children checkpointed, row not collected"
                    ));
                }
                continue;
            }
            // Converged includes no hand-off in flight (a hand-off racing the
            // final shutdown hits a known core bug, see the ignored test
            // `shutdown_right_after_requesting_handoff_releases_transferred_lease`).
            if let Some(pending) = row.and_then(|r| r.pending_owner.as_ref()) {
                out.push(format!("{sref}: hand-off to {pending} pending"));
                continue;
            }
            if !s.is_open() {
                out.push(format!(
                    "{sref}: closed, not at SHARD_END (row {:?})",
                    row.map(|r| (&r.owner, r.token, &r.checkpoint))
                ));
                continue;
            }
            if !row
                .and_then(|r| r.owner.as_ref())
                .is_some_and(|o| live.contains(o) && self.oracles.holds(o, &sref))
            {
                out.push(format!(
                    "{sref}: not held by a live worker (row {:?})",
                    row.map(|r| (&r.owner, r.token))
                ));
            }
        }
        for (shard, n) in self.oracles.unsettled() {
            out.push(format!("shard {shard}: {n} records not acknowledged"));
        }
        out.extend(self.unfair(Micros::MAX));
        // Heartbeat rows of gone workers are collected (10 failover
        // periods after they stopped, by the smallest live worker): a
        // fleet has not settled while one is left.
        for row in self.dynamo.beats.values() {
            if !(0..self.procs.len()).any(|p| self.running(p) && self.procs[p].owner() == row.owner)
            {
                out.push(format!(
                    "heartbeat row of {} (gone) not collected",
                    row.owner
                ));
            }
        }
        out
    }

    /// Leases that can be read now, as balancing counts them (SPEC 4): not
    /// ended, and every parent's row ended (a parent without a row is
    /// gone: trimmed before any worker listed it). A child waiting for its
    /// parent is no one's share yet: a worker cannot hold it.
    pub(crate) fn active_leases(&self, app: usize) -> usize {
        let leases = &self.dynamo.leases;
        leases
            .values()
            .filter(|r| {
                self.app_of(&r.shard.stream) == Some(app)
                    && r.checkpoint != Some(Checkpoint::ShardEnd)
                    && r.parents.iter().all(|p| {
                        leases
                            .get(&ShardRef::new(r.shard.stream.clone(), p.clone()))
                            .is_none_or(|pr| pr.checkpoint == Some(Checkpoint::ShardEnd))
                    })
            })
            .count()
    }

    /// Live workers started at or before `started_by` holding fewer than
    /// their fair share, `floor(active leases / live workers)` (SPEC 4: a
    /// joining worker gets its share). Every live worker counts in the
    /// share; `started_by` only picks whose holdings are judged.
    pub(crate) fn unfair(&self, started_by: Micros) -> Vec<String> {
        (0..self.p.apps.max(1))
            .flat_map(|app| self.unfair_in(app, started_by))
            .collect()
    }

    /// [`Self::unfair`] for application `app`: its leases over its live
    /// workers (the other applications' workers share the table, not the
    /// leases).
    fn unfair_in(&self, app: usize, started_by: Micros) -> Vec<String> {
        let active = self.active_leases(app);
        let live: Vec<usize> = (0..self.procs.len())
            .filter(|&p| {
                self.procs[p].app == app && self.running(p) && !self.procs[p].shutting_down
            })
            .collect();
        let Some(fair) = active.checked_div(live.len()) else {
            return Vec::new();
        };
        let holdings: Vec<String> = live
            .iter()
            .map(|&p| {
                let o = self.procs[p].owner();
                format!("{o}={}", self.oracles.held_by(&o))
            })
            .collect();
        live.iter()
            .filter(|&&p| self.procs[p].started_at <= started_by)
            .filter_map(|&p| {
                let o = self.procs[p].owner();
                let held = self.oracles.held_by(&o);
                (held < fair).then(|| {
                    format!(
                        "{o} holds {held} of {active} leases, below its fair share {fair} (held: {})",
                        holdings.join(" ")
                    )
                })
            })
            .collect()
    }

    /// Once a second in the heal phase: caught up (then shut the fleet
    /// down), or a liveness violation at the bound.
    pub(crate) fn heal_check(&mut self) -> Check {
        if self.phase != Phase::Heal {
            return Ok(());
        }
        let lagging = if self.p.check_liveness {
            self.lagging()
        } else {
            Vec::new()
        };
        if lagging.is_empty()
            && self.now
                >= self.heal_start
                    + if self.p.check_liveness {
                        0
                    } else {
                        self.p.heal_us
                    }
        {
            // The first application's (the only one in the shape tests).
            let held = (0..self.procs.len())
                .filter(|&p| {
                    self.procs[p].app == 0 && self.running(p) && !self.procs[p].shutting_down
                })
                .map(|p| self.oracles.held_by(&self.procs[p].owner()))
                .collect();
            self.report.settled = Some((self.active_leases(0), held));
            // Joiners at their fair share close their samples now, before
            // the fleet shuts down.
            self.check_joins()?;
            if self.p.check_liveness {
                self.check_dead_letters()?;
            }
            self.report.heal = Some(self.now - self.heal_start);
            self.trace.line(self.now, format_args!("caught up"));
            self.phase = Phase::Closing;
            self.shutdown_start = self.now;
            for p in 0..self.procs.len() {
                if self.running(p) && !self.procs[p].shutting_down {
                    self.apply(Op::Shutdown(p))?;
                }
            }
            self.q.push(self.now + SEC, Ev::FinalCheck);
            return Ok(());
        }
        // The balancing bound: once faults end, expired leases go within
        // the failover time and every live worker holds its fair share
        // within two rebalance periods after that. A worker that started
        // during the heal phase (a restart scheduled by a fault-phase
        // crash or shutdown, landing while the fleet waits for gone
        // workers' heartbeat rows to be collected) is judged
        // BALANCE_BOUND after its own start, not the heal's: the bound
        // runs from the later of the two (swarm seeds 761, 3362, ...: a
        // restart 84 s into the heal was judged 0.7 s after it started).
        // A recreated stream's shards may be quarantined (their ids failed
        // with the old stream) up to QUARANTINE after the recreation: the
        // bounds run from the later of the heal and that.
        let settled = self
            .last_recreation
            .map_or(self.heal_start, |t| self.heal_start.max(t + QUARANTINE));
        if self.p.check_liveness && self.now >= settled + BALANCE_BOUND {
            let unfair = self.unfair(self.now - BALANCE_BOUND);
            if !unfair.is_empty() {
                return Err(self.violation(
                    "balance",
                    format!(
                        "{}s after the heal began (bound: failover + 2 rebalance periods + 5 s): {}",
                        (self.now - self.heal_start) / SEC,
                        unfair.join("; ")
                    ),
                ));
            }
        }
        if self.now >= settled + self.p.heal_us {
            let shown: Vec<&str> = lagging.iter().take(8).map(String::as_str).collect();
            return Err(self.violation(
                "liveness",
                format!(
                    "not caught up {}s after the heal began: {}",
                    self.p.heal_us / SEC,
                    shown.join("; ")
                ),
            ));
        }
        self.q.push(self.now + SEC, Ev::HealCheck);
        Ok(())
    }

    /// Once a second while closing: every worker shut down and no row
    /// owned (done), or a violation at the bound.
    pub(crate) fn final_check(&mut self) -> Check {
        let pending: Vec<Owner> = (0..self.procs.len())
            .filter(|&p| self.running(p))
            .map(|p| self.procs[p].owner())
            .collect();
        if pending.is_empty() {
            for row in self.dynamo.leases.values() {
                if let Some(o) = &row.owner {
                    return Err(self.violation(
                        "shutdown",
                        format!(
                            "{} still owned by {o} after every worker shut down",
                            row.shard
                        ),
                    ));
                }
            }
            self.phase = Phase::Done;
            return Ok(());
        }
        if self.now >= self.shutdown_start + SHUTDOWN_BOUND {
            return Err(self.violation(
                "shutdown",
                format!(
                    "{pending:?} did not complete shutdown within {}s",
                    SHUTDOWN_BOUND / SEC
                ),
            ));
        }
        self.q.push(self.now + SEC, Ev::FinalCheck);
        Ok(())
    }

    /// Poison scenario, once caught up: every poisoned record that had to
    /// be delivered was acknowledged through the dead-letter handler (the
    /// sink never acks it otherwise), and every record the handler got is
    /// poisoned (checked at each offer), so the dead letters are exactly
    /// the poisoned records.
    fn check_dead_letters(&mut self) -> Check {
        if self.p.poison_every == 0 {
            return Ok(());
        }
        let missing: Vec<u64> = self
            .oracles
            .records
            .iter()
            .enumerate()
            .map(|(id, r)| (id as u64, r))
            .filter(|(id, r)| self.p.poisoned(*id) && !r.trimmed && !r.excused)
            .filter(|(id, r)| !r.acked || !self.dead_lettered.contains(id))
            .map(|(id, _)| id)
            .collect();
        if let Some(first) = missing.first() {
            return Err(self.violation(
                "dead-letter",
                format!(
                    "{} poisoned records not acknowledged through the dead-letter handler (first {first})",
                    missing.len()
                ),
            ));
        }
        Ok(())
    }
}

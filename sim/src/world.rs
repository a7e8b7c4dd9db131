//! The world: real `kinesin_core::Worker`s driven against the simulated
//! Kinesis and DynamoDB on one logical timeline, with faults.
//!
//! Models: the event loop of a run, the runtime of each worker process
//! (it executes actions, keeps payloads per chunk, and hands batches to a
//! sink that acks out of order, nacks and stalls), the glue between the
//! requests and the services' answers (EFO reads woken when records
//! arrive, GetRecords, lease-table writes checked by the oracles), the
//! producer (plain records, KPL aggregates, and misrouted aggregates: built
//! with the shard map from before the last reshard, or put with an explicit
//! hash key routing them elsewhere, whose sub-records outside the landing
//! shard's range every consumer drops), and resharding. What it delegates: what the network does to
//! each message to [`crate::net::Net`], processes coming and going and the
//! heal and closing phases to `fleet.rs` (`impl World`), the services'
//! rules to [`crate::kinesis`] and [`crate::dynamo`], the trace text to
//! `trace_fmt.rs`.
//!
//! AWS rules encoded here: none of the services' own (those live in
//! `kinesis.rs` and `dynamo.rs`, the network's in `net.rs`); the runtime
//! contract is DESIGN's "Runtimes": after every call into a worker the
//! driver drains `poll_action` and `poll_event` until both are empty,
//! executes the actions, de-aggregates KPL records with `kpl::deaggregate`
//! and `kpl::filter_by_range`, keeps payload ids per `ChunkId` until
//! `ChunkDone`, hands batches to the sink, and sleeps until `poll_timeout`
//! (converted from the worker's clock to true time).
//!
//! Invariants: every random draw comes from the run's one [`Rng`] seeded
//! by the run's seed, in an order fixed by the event order (the trace hash
//! pins it); events are processed in (time, scheduling order); every
//! oracle runs after every step and the first violation stops the run.
//!
//! Imports: every other module of the crate (it is the composition root)
//! and `kinesin_core`; nothing imports it but `fleet.rs` (its `impl World`)
//! and [`crate::run`].

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

use kinesin_core::ids::{BatchId, ChunkId, FencingToken, Owner, ShardRef, StreamId, SubId};
use kinesin_core::io::{Action, Chunk, ErrorClass, Event, Input, LostReason, RecordMeta};
use kinesin_core::kpl::{self, HashRange, UserPayload};
use kinesin_core::rng::Rng;
use kinesin_core::sequence::{ExtSeq, StartPosition};
use kinesin_core::table::LeaseWrite;
use kinesin_core::worker::Worker;

use crate::bounds::{Bounds, ProcId};
use crate::dynamo::Dynamo;
use crate::fleet::{Pending, Proc, ProcState};
use crate::kinesis::{Kinesis, PullAnswer, SubKey};
use crate::memory::Memory;
use crate::net::{Call, Delivery, Net, Reply, Service, CALL_DEADLINE};
use crate::oracle::{Check, Oracles, Violation};
use crate::scenario::{Op, Params, RunReport};
use crate::sched::{between, exp, Micros, Queue, Trace, MS, SEC};
use crate::stuck::Stuck;
use crate::trace_fmt::{self, Brief, OptCp};

/// The stream every run consumes.
pub const STREAM: &str = "arn:aws:kinesis:us-east-1:000000000000:stream/sim";
/// The ARN of stream `s` of a run: [`STREAM`] for the first, then
/// `STREAM-{s}`.
pub fn stream_name(s: usize) -> String {
    if s == 0 {
        STREAM.to_owned()
    } else {
        format!("{STREAM}-{s}")
    }
}

/// The EFO consumer name (stable, shared by the fleet).
pub const CONSUMER: &str = "kinesin-sim";
/// Wall clock at true time 0.
pub(crate) const UNIX_BASE_MS: u64 = 1_700_000_000_000;
/// The core quarantines a failed shard this long (`worker/read.rs`): a
/// recreated stream's shards whose ids failed with the old stream.
pub(crate) const QUARANTINE: Micros = 300 * SEC;
/// Timer firings at one instant that mean a busy loop.
const SPIN_LIMIT: u32 = 10_000;

pub(crate) enum Ev {
    Timer {
        p: usize,
        inc: u64,
        gen: u64,
    },
    Arrive {
        p: usize,
        inc: u64,
        action: Action,
        /// A late write ([`Delivery::Late`]): it applies, its answer goes
        /// nowhere (the caller gave up on it).
        late: bool,
        /// A Transfer sent when its owner's deliveries of the lease were
        /// all acknowledged: a graceful hand-off (judged when sent, as
        /// its checkpoint was fixed then, not when it arrives).
        graceful: bool,
    },
    Respond {
        p: usize,
        inc: u64,
        input: Input,
        payload: Option<(ChunkId, usize, Vec<u64>)>,
    },
    Wake {
        key: SubKey,
        gen: u64,
    },
    Sink {
        p: usize,
        inc: u64,
        batch: BatchId,
        ack: bool,
    },
    Resume {
        p: usize,
        inc: u64,
    },
    Produce,
    FaultTick,
    Op(Op),
    HealStart,
    HealCheck,
    FinalCheck,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Phase {
    Faults,
    Heal,
    Closing,
    Done,
}

/// One simulated run.
pub struct World {
    pub(crate) p: Params,
    pub(crate) rng: Rng,
    pub(crate) now: Micros,
    pub(crate) q: Queue<Ev>,
    pub(crate) epoch: Instant,
    pub(crate) kinesis: Kinesis,
    pub(crate) dynamo: Dynamo,
    pub(crate) procs: Vec<Proc>,
    pub(crate) oracles: Oracles,
    pub(crate) trace: Trace,
    pub(crate) sub_ids: BTreeMap<SubKey, SubId>,
    pub(crate) early_pulls: BTreeMap<SubKey, ChunkId>,
    pub(crate) phase: Phase,
    pub(crate) net: Net,
    pub(crate) keys: Vec<(String, u128)>,
    pub(crate) heal_start: Micros,
    /// User records the dead-letter handler was offered (poison scenario).
    pub(crate) dead_lettered: BTreeSet<u64>,
    pub(crate) shutdown_start: Micros,
    pub(crate) open_shards: usize,
    pub(crate) shard_us: u128,
    pub(crate) last_shard_tick: Micros,
    pub(crate) bounds: Bounds,
    /// When the timed bounds are checked next (once a simulated second).
    pub(crate) next_bounds_check: Micros,
    /// The end of the latest fault op (crash, stall, partition, sink
    /// stall, shutdown): a join before it plus F is not fault-free.
    pub(crate) last_disruption: Option<Micros>,
    pub(crate) report: RunReport,
    pub(crate) violation: Option<Violation>,
    /// The memory oracle (reads reserved, usage within the budgets).
    pub(crate) memory: Memory,
    /// The stuck-request oracle (one black-holed request never fences).
    pub(crate) stuck: Stuck,
    /// EFO subscriptions gone silent (`Faults::efo_silent`).
    pub(crate) silenced: u64,
    /// The request arriving now is a late one ([`Delivery::Late`]): it
    /// applies, and its answer is dropped.
    pub(crate) late: bool,
    /// The Transfer arriving now was sent gracefully (see `Ev::Arrive`).
    pub(crate) graceful: bool,
    /// Per stream, the open shards' hash ranges before its latest split or
    /// merge: the shard map of a KPL producer that has not refreshed it
    /// (`Params::kpl_stale`).
    pub(crate) stale_map: Vec<Vec<HashRange>>,
    /// Streams deleted and recreated ([`Op::RecreateStream`]): a read of
    /// one of their shards may fail for good (ResourceNotFound on a shard
    /// gone with the old stream), as it must.
    pub(crate) recreated: BTreeSet<usize>,
    /// When a stream was last recreated: the old stream's shards failed
    /// (ResourceNotFound) and the worker quarantines a failed shard's id
    /// for 5 minutes, the new shard of that id included.
    pub(crate) last_recreation: Option<Micros>,
    /// Shards a process failed (a recreated stream's) and quarantines
    /// until the instant (SPEC 5): it cannot take them over meanwhile.
    pub(crate) quarantines: BTreeMap<(ProcId, ShardRef), Micros>,
}

pub(crate) fn dur(us: Micros) -> Duration {
    Duration::from_micros(us)
}

impl World {
    /// Build the world for these parameters (nothing runs yet).
    pub fn new(p: Params) -> Self {
        let mut rng = Rng::new(p.seed);
        let stream = StreamId::new(STREAM);
        let mut kinesis = Kinesis::new(stream, p.shards, p.retention, UNIX_BASE_MS);
        kinesis.idle_event_interval = p.efo_idle_event;
        kinesis.empty_first_event = p.efo_empty_first_event;
        kinesis.empty_get_records = p.empty_get_records;
        kinesis.ragged_events = p.ragged_events;
        for s in 1..p.streams() {
            kinesis.add_stream(StreamId::new(stream_name(s)), p.shards);
        }
        let stale_map = (0..kinesis.streams.len())
            .map(|s| {
                let shards = kinesis.stream_shards[s].iter();
                shards.map(|&i| kinesis.shards[i].range).collect()
            })
            .collect();
        let mut oracles = Oracles::default();
        oracles.latest = p.start_latest;
        oracles.start_at_ms = p.start_at_us.map(|t| UNIX_BASE_MS + t / MS);
        for _ in 0..kinesis.shards.len() {
            oracles.add_shard(Vec::new());
        }
        let keys = (0..p.keys.max(1))
            .map(|i| {
                let k = format!("pk-{i}");
                let h = kpl::hash_key(k.as_bytes(), None).expect("md5 key");
                (k, h)
            })
            .collect();
        let _ = rng.next_u64();
        let open = kinesis.shards.len();
        let trace = Trace::keeping(p.trace_tail);
        let net = Net::new(&p.faults);
        World {
            report: RunReport {
                scenario: p.scenario.clone(),
                seed: p.seed,
                ..RunReport::default()
            },
            p,
            rng,
            now: 0,
            q: Queue::default(),
            epoch: Instant::now(),
            kinesis,
            dynamo: Dynamo::default(),
            procs: Vec::new(),
            oracles,
            trace,
            sub_ids: BTreeMap::new(),
            early_pulls: BTreeMap::new(),
            phase: Phase::Faults,
            net,
            keys,
            heal_start: 0,
            dead_lettered: BTreeSet::new(),
            shutdown_start: 0,
            open_shards: open,
            shard_us: 0,
            last_shard_tick: 0,
            bounds: Bounds::default(),
            next_bounds_check: 0,
            last_disruption: None,
            violation: None,
            memory: Memory::default(),
            stuck: Stuck::default(),
            silenced: 0,
            late: false,
            graceful: false,
            stale_map,
            recreated: BTreeSet::new(),
            last_recreation: None,
            quarantines: BTreeMap::new(),
        }
    }

    /// Run to the end (or the first violation) and report.
    pub fn run(mut self) -> RunReport {
        let start = if self.p.pre_split || self.p.start_at_us.is_some() {
            10 * SEC
        } else {
            0
        };
        if self.p.pre_split {
            self.q.push(0, Ev::Produce);
            self.q.push(2 * SEC, Ev::Op(Op::Split(0)));
            let pre_script = if self.p.shards > 1 {
                Some(Op::Merge(0))
            } else {
                None
            };
            if let Some(op) = pre_script {
                self.q.push(4 * SEC, Ev::Op(op));
            }
        } else {
            self.q.push(0, Ev::Produce);
        }
        for _ in 0..self.p.workers * self.p.apps.max(1) {
            self.q.push(start, Ev::Op(Op::Join));
        }
        let script = std::mem::take(&mut self.p.script);
        for (at, op) in script {
            self.q.push(start + at, Ev::Op(op));
        }
        self.q.push(start + SEC, Ev::FaultTick);
        self.heal_start = start + self.p.fault_us;
        self.q.push(self.heal_start, Ev::HealStart);
        while let Some((at, ev)) = self.q.pop() {
            debug_assert!(at >= self.now);
            self.account_shards(at);
            self.now = at;
            if let Err(v) = self.check_bounds().and_then(|()| self.handle(ev)) {
                self.violation = Some(v);
                break;
            }
            if self.phase == Phase::Done {
                if let Err(v) = self.bounds.end(self.now) {
                    self.violation = Some(v);
                }
                break;
            }
        }
        self.finish()
    }

    fn finish(mut self) -> RunReport {
        self.account_shards(self.now);
        let r = &mut self.report;
        r.sim_us = self.now;
        r.shard_us = self.shard_us;
        r.counts = self.dynamo.counts.clone();
        r.subscribe_calls = self.kinesis.subscribe_calls;
        r.subscribe_refused_own = self.kinesis.subscribe_refused_own;
        r.subscribe_refused_fleet = self.kinesis.subscribe_refused_fleet;
        if self.p.efo {
            r.efo_shard_us = self.shard_us;
        }
        for &(cause, us) in &self.bounds.failover_samples {
            if cause.asserted() {
                r.failovers.push(us);
            } else {
                r.failovers_other.push((cause, us));
            }
        }
        for &(asserted, us) in &self.bounds.join_samples {
            if asserted {
                r.convergence.push(us);
            } else {
                r.convergence_other.push(us);
            }
        }
        r.records = self.oracles.stats.records;
        r.duplicates = self.oracles.stats.duplicates;
        r.idle_checkpoints = self.oracles.stats.idle_checkpoints;
        r.kpl_foreign = self.oracles.stats.foreign;
        r.reads_over_reservation = self.memory.over_reservation;
        r.max_over_budget_bytes = self.memory.max_over_bytes;
        r.max_decoding_over_budget_bytes = self.memory.max_decoding_over_bytes;
        r.black_holed = self.stuck.black_holed;
        r.black_holed_beats = self.stuck.black_holed_beats;
        r.silenced = self.silenced;
        r.trace_hash = self.trace.hash();
        r.trace_lines = self.trace.lines();
        if self.violation.is_some() || self.p.trace_tail > crate::sched::TRACE_TAIL {
            let (procs, kinesis) = (&self.procs, &self.kinesis);
            r.trace_tail = self
                .trace
                .tail_with(|line| {
                    let name = |p: usize| procs.get(p).map(|pr| pr.name.as_str());
                    trace_fmt::render_packed(name, kinesis, line)
                })
                .collect();
        }
        r.violation = self.violation.take();
        self.report
    }

    fn account_shards(&mut self, at: Micros) {
        self.shard_us += self.open_shards as u128 * u128::from(at - self.last_shard_tick);
        self.last_shard_tick = at;
    }

    /// Whether the run is in its fault phase (faults are drawn).
    pub(crate) fn faults_on(&self) -> bool {
        self.phase == Phase::Faults
    }

    pub(crate) fn violation(&self, oracle: &'static str, message: String) -> Violation {
        Violation {
            at: self.now,
            oracle,
            message,
        }
    }

    // ----- the event loop ----------------------------------------------------

    fn handle(&mut self, ev: Ev) -> Check {
        match ev {
            Ev::Timer { p, inc, gen } => {
                let pr = &mut self.procs[p];
                if pr.inc != inc || pr.timer.map(|t| t.1) != Some(gen) || pr.paused_until.is_some()
                {
                    return Ok(());
                }
                pr.timer = None;
                if pr.spin.0 == self.now {
                    pr.spin.1 += 1;
                    if pr.spin.1 > SPIN_LIMIT {
                        let msg = format!(
                            "{} asked for a timeout at the same instant {SPIN_LIMIT} times ({})",
                            pr.owner(),
                            pr.timer_why
                        );
                        return Err(self.violation("no-busy-loop", msg));
                    }
                } else {
                    pr.spin = (self.now, 0);
                }
                self.step(p, |w, now| w.handle_timeout(now))
            }
            Ev::Arrive {
                p,
                inc,
                action,
                late,
                graceful,
            } => {
                self.late = late;
                self.graceful = graceful;
                if late {
                    self.trace
                        .line(self.now, format_args!("late write arrives: {action:?}"));
                }
                let r = self.arrive(p, inc, action);
                self.late = false;
                self.graceful = false;
                r
            }
            Ev::Respond {
                p,
                inc,
                input,
                payload,
            } => self.respond(p, inc, input, payload),
            Ev::Wake { key, gen } => self.wake(key, gen),
            Ev::Sink { p, inc, batch, ack } => {
                let pr = &mut self.procs[p];
                if pr.inc != inc || pr.state != ProcState::Running {
                    return Ok(());
                }
                if pr.paused_until.is_some() {
                    pr.backlog.push(Pending::Sink(batch, ack));
                    return Ok(());
                }
                self.sink_done(p, batch, ack)
            }
            Ev::Resume { p, inc } => self.resume(p, inc),
            Ev::Produce => {
                if self.phase == Phase::Faults {
                    self.produce()?;
                    self.q.push(self.now + self.p.produce_every, Ev::Produce);
                }
                Ok(())
            }
            Ev::FaultTick => self.fault_tick(),
            Ev::Op(op) => self.apply(op),
            Ev::HealStart => self.heal(),
            Ev::HealCheck => self.heal_check(),
            Ev::FinalCheck => self.final_check(),
        }
    }

    // ----- workers -----------------------------------------------------------

    /// Call into a worker, then drain its outputs, check, and re-arm its timer.
    pub(crate) fn step(&mut self, p: usize, f: impl FnOnce(&mut Worker, Instant)) -> Check {
        let pr = &mut self.procs[p];
        let Some(w) = pr.worker.as_mut() else {
            return Ok(());
        };
        let local = pr.clock.local(self.now).max(pr.last_local);
        pr.last_local = local;
        let before = w.pool_used();
        f(w, self.epoch + dur(local));
        self.after_step(p)?;
        let Some(w) = self.procs[p].worker.as_ref() else {
            return Ok(());
        };
        if let Err(message) = self.memory.check_step(before, w) {
            let owner = self.procs[p].owner();
            return Err(self.violation("memory", format!("{owner}: {message}")));
        }
        Ok(())
    }

    pub(crate) fn after_step(&mut self, p: usize) -> Check {
        loop {
            let Some(w) = self.procs[p].worker.as_mut() else {
                return Ok(());
            };
            if let Some(a) = w.poll_action() {
                self.send(p, a)?;
                continue;
            }
            let Some(e) = w.poll_event() else {
                break;
            };
            self.event(p, e)?;
        }
        self.check_fence(p)?;
        let pr = &mut self.procs[p];
        let Some(w) = pr.worker.as_ref() else {
            return Ok(());
        };
        if let Err(e) = w.check_invariants() {
            let owner = pr.owner();
            return Err(self.violation("worker-invariants", format!("{owner}: {e}")));
        }
        match w.poll_timeout() {
            Some((at, why)) => {
                pr.timer_why = why;
                // Round up: deadlines carry nanoseconds (F/3), the clock micros.
                let local = at
                    .saturating_duration_since(self.epoch)
                    .as_nanos()
                    .div_ceil(1000) as Micros;
                let t = pr.clock.true_at(local).max(self.now);
                if pr.timer.map(|x| x.0) != Some(t) {
                    pr.timer_gen += 1;
                    pr.timer = Some((t, pr.timer_gen));
                    let (inc, gen) = (pr.inc, pr.timer_gen);
                    self.q.push(t, Ev::Timer { p, inc, gen });
                }
            }
            None => pr.timer = None,
        }
        Ok(())
    }

    fn local_now(&self, p: usize) -> Micros {
        self.procs[p].last_local
    }

    /// An event from worker `p` for the application.
    fn event(&mut self, p: usize, e: Event) -> Check {
        let owner = self.procs[p].owner();
        match e {
            Event::Batch(b) => {
                trace_fmt::batch_line(&mut self.trace, self.now, &owner, &b);
                // A chunk read before its stream was deleted and recreated
                // comes from the old shard its ShardId named then.
                let old = match self.procs[p].chunks.get(&b.chunk) {
                    Some((s, _))
                        if !b.redelivery
                            && self.kinesis.shards[*s].deleted
                            && self.kinesis.shard_ref(*s) == b.shard =>
                    {
                        Some(*s)
                    }
                    _ => None,
                };
                // A redelivery is of the shard its first delivery was.
                let first = b
                    .redelivery
                    .then(|| self.procs[p].batches.get(&b.id).map(|(s, _, _)| *s))
                    .flatten();
                let shard = first.or(old).or_else(|| self.kinesis.index_of(&b.shard));
                let shard = shard.ok_or_else(|| {
                    self.violation("batch-metadata", format!("unknown shard {}", b.shard))
                })?;
                let pr = &mut self.procs[p];
                let (shard, ids) = if b.redelivery {
                    match pr.batches.get(&b.id) {
                        Some((s, _, ids)) => (*s, ids.clone()),
                        None => {
                            return Err(self.violation(
                                "batch-metadata",
                                format!("{owner} redelivered unknown {:?}", b.id),
                            ))
                        }
                    }
                } else {
                    match pr.chunks.get(&b.chunk) {
                        Some((s, ids)) if *s == shard && (b.range.end as usize) <= ids.len() => (shard, ids[b.range.start as usize..b.range.end as usize].to_vec()),
                        _ => {
                            return Err(self.violation(
                                "batch-metadata",
                                format!("{owner} cut {:?} from {:?} {:?}, which it does not hold (freed or other shard)", b.id, b.chunk, b.range),
                            ))
                        }
                    }
                };
                pr.batches.insert(b.id, (shard, b.token, ids.clone()));
                self.bounds.progress(self.now, &owner, &b.shard);
                let row = self.dynamo.leases.get(&b.shard);
                self.oracles
                    .delivered(self.now, &owner, shard, &b, &ids, row)?;
                let nack = (self.faults_on() && self.rng.chance(self.p.faults.sink_nack))
                    || ids.iter().any(|&id| self.p.poisoned(id));
                let delay = exp(&mut self.rng, self.p.faults.sink_ack_mean);
                let at = self.now.max(self.procs[p].sink_stall_until) + delay;
                if self.procs[p].sink_stall_until > self.now {
                    let pr = &mut self.procs[p];
                    pr.acks_held_until = pr.acks_held_until.max(at);
                }
                let inc = self.procs[p].inc;
                self.q.push(
                    at,
                    Ev::Sink {
                        p,
                        inc,
                        batch: b.id,
                        ack: !nack,
                    },
                );
            }
            Event::DeadLetter { batch, attempts } => {
                self.trace.line(
                    self.now,
                    format_args!(
                        "{owner} dead-letter {:?} {} x{attempts}",
                        batch.id, batch.shard
                    ),
                );
                let ids = match self.procs[p].batches.get(&batch.id) {
                    Some((_, _, ids)) => ids.clone(),
                    None => {
                        return Err(self.violation(
                            "dead-letter",
                            format!("{owner} dead-lettered {:?}, never delivered", batch.id),
                        ))
                    }
                };
                if let Some(id) = ids.iter().find(|&&id| !self.p.poisoned(id)) {
                    return Err(self.violation(
                        "dead-letter",
                        format!(
                            "{owner} dead-lettered {:?} with record {id}, which the sink never nacks",
                            batch.id
                        ),
                    ));
                }
                if attempts != crate::fleet::MAX_DELIVERIES {
                    return Err(self.violation(
                        "dead-letter",
                        format!(
                            "{owner} dead-lettered {:?} after {attempts} deliveries, not {}",
                            batch.id,
                            crate::fleet::MAX_DELIVERIES
                        ),
                    ));
                }
                self.dead_lettered.extend(ids.iter().copied());
                self.report.dead_letters += 1;
                let refuse = self.rng.chance(self.p.dead_letter_refuse);
                let delay = exp(&mut self.rng, self.p.faults.sink_ack_mean);
                let at = self.now.max(self.procs[p].sink_stall_until) + delay;
                if self.procs[p].sink_stall_until > self.now {
                    let pr = &mut self.procs[p];
                    pr.acks_held_until = pr.acks_held_until.max(at);
                }
                let inc = self.procs[p].inc;
                self.q.push(
                    at,
                    Ev::Sink {
                        p,
                        inc,
                        batch: batch.id,
                        ack: !refuse,
                    },
                );
            }
            Event::ChunkDone { chunk } => {
                self.procs[p].chunks.remove(&chunk);
            }
            Event::LeaseAcquired { shard, token, .. } => {
                self.trace.line(
                    self.now,
                    format_args!("{owner} acquired {shard} tok{}", token.0),
                );
                self.oracles.acquired(self.now, &owner, &shard, token)?;
                // Failover is the lease protocol's bound (SPEC 4): it ends
                // when another worker holds the lease (or reads the shard,
                // whichever comes first). Reading it once held is the stall
                // oracle's: an EFO consumer still activating may delay the
                // first subscribe legitimately.
                if let Some((cause, took, from)) = self.bounds.read(self.now, &shard, &owner)? {
                    self.trace.line(
                        self.now,
                        format_args!(
                            "failover {shard} from {from} ({}) in {}ms",
                            cause.name(),
                            took / MS
                        ),
                    );
                }
                self.check_joins()?;
            }
            Event::LeaseLost {
                shard,
                token,
                reason,
            } => {
                self.trace.line(
                    self.now,
                    format_args!("{owner} lost {shard} tok{} {reason:?}", token.0),
                );
                self.oracles.lost(&owner, &shard);
                self.bounds.hold_ended(&owner, &shard);
                *self.report.lost.entry(format!("{reason:?}")).or_default() += 1;
                if reason == LostReason::SelfFenced {
                    let horizon = self.procs[p].worker.as_ref().map_or(0, |w| {
                        let c = w.config();
                        c.failover_time.max(2 * c.handoff_timeout).as_micros() as Micros
                    });
                    let id = (p, self.procs[p].inc);
                    if let Err(message) = self.stuck.self_fenced(id, self.now, horizon) {
                        return Err(self.violation("stuck-request", format!("{owner}: {message}")));
                    }
                }
                let pr = &mut self.procs[p];
                pr.subs.remove(&shard);
                pr.polls.remove(&shard);
            }
            Event::ShardEnded { shard } => {
                self.trace
                    .line(self.now, format_args!("{owner} shard-ended {shard}"));
            }
            Event::ShardFailed { shard, class } => {
                let gone = self
                    .kinesis
                    .stream_index(&shard.stream)
                    .is_some_and(|s| self.recreated.contains(&s));
                if gone {
                    self.trace.line(
                        self.now,
                        format_args!("{owner} shard-failed {shard} {class:?} (stream recreated)"),
                    );
                    // SPEC 5: this worker leaves the shard alone for
                    // QUARANTINE; it is no survivor for that shard's
                    // failover meanwhile.
                    let id = (p, self.procs[p].inc);
                    self.quarantines.insert((id, shard), self.now + QUARANTINE);
                    return Ok(());
                }
                return Err(self.violation(
                    "shard-failed",
                    format!("{owner}: {shard} failed with {class:?}"),
                ));
            }
            Event::Warning { shard, message } => {
                self.trace.line(
                    self.now,
                    format_args!("{owner} warning {shard:?} {message}"),
                );
            }
            Event::Fatal { message } => {
                // A process whose worker id a later process took (its
                // heartbeat row outlives it) stops for good, as the CLI
                // exits; any other fatal error is a violation.
                let (name, inc) = (&self.procs[p].name, self.procs[p].inc);
                let later = self.procs.iter().any(|q| q.name == *name && q.inc > inc);
                if !self.recreated.is_empty() && message.contains("deleted and recreated") {
                    self.trace
                        .line(self.now, format_args!("{owner} exits: {message}"));
                    return self.operator_clears_stale_rows(p);
                }
                if !(later && message.contains("in use by a later process")) {
                    return Err(self.violation("fatal", format!("{owner}: {message}")));
                }
                self.trace
                    .line(self.now, format_args!("{owner} exits: {message}"));
                self.procs[p].state = ProcState::Crashed;
                self.leave(p);
                return Ok(());
            }
            Event::Health(health) => {
                // The simulated services never refuse access: a worker
                // saying it is failing is a false alarm.
                if health != kinesin_core::health::Health::Healthy {
                    return Err(self.violation("health", format!("{owner}: {health:?}")));
                }
            }
            Event::ShutdownComplete => {
                self.trace
                    .line(self.now, format_args!("{owner} shutdown-complete"));
                // Rows the table still gives to this incarnation (not an
                // oracle: a hand-off landing after its last read is a race
                // no reader can close; the scenario tests pin the count).
                self.report.owned_after_shutdown += self
                    .dynamo
                    .leases
                    .values()
                    .filter(|r| r.owner.as_ref() == Some(&owner))
                    .count() as u64;
                let pr = &mut self.procs[p];
                let used = pr
                    .worker
                    .as_ref()
                    .map(|w| w.pool_used())
                    .unwrap_or_default();
                if used != (0, 0) {
                    return Err(self.violation(
                        "pool-accounting",
                        format!("{owner}: pool used {used:?} after shutdown"),
                    ));
                }
                if !pr.chunks.is_empty() {
                    let n = pr.chunks.len();
                    let first = pr.chunks.keys().next().copied();
                    return Err(self.violation(
                        "payload-leak",
                        format!("{owner}: {n} chunks never freed after shutdown (first {first:?})"),
                    ));
                }
                self.procs[p].state = ProcState::Left;
                self.leave(p);
            }
        }
        Ok(())
    }

    pub(crate) fn sink_done(&mut self, p: usize, batch: BatchId, ack: bool) -> Check {
        let mut result = Ok(());
        self.step(p, |w, now| {
            result = if ack {
                w.ack(now, batch)
            } else {
                w.nack(now, batch)
            };
        })?;
        let owner = self.procs[p].owner();
        trace_fmt::sink_line(
            &mut self.trace,
            self.now,
            &owner,
            batch,
            ack,
            result.is_ok(),
        );
        let pr = &mut self.procs[p];
        if ack || result.is_err() {
            if let Some((shard, _, ids)) = pr.batches.remove(&batch) {
                if ack && result.is_ok() {
                    self.oracles.acked(shard, &ids);
                }
            }
        }
        Ok(())
    }

    // ----- network -----------------------------------------------------------

    /// Worker `p` performs an action.
    fn send(&mut self, p: usize, a: Action) -> Check {
        let owner = self.procs[p].owner();
        trace_fmt::action_line(&mut self.trace, &self.kinesis, self.now, p, &owner, &a);
        let inc = self.procs[p].inc;
        if let Action::Subscribe { shard, .. }
        | Action::GetRecords { shard, .. }
        | Action::GetShardIterator { shard, .. } = &a
        {
            if let Some((cause, took, from)) = self.bounds.read(self.now, shard, &owner)? {
                self.trace.line(
                    self.now,
                    format_args!(
                        "failover {shard} from {from} ({}) in {}ms",
                        cause.name(),
                        took / MS
                    ),
                );
            }
        }
        let read = match &a {
            Action::Pull { sub, chunk } => {
                Some((*chunk, self.procs[p].sub_shard.get(sub).cloned()))
            }
            Action::GetRecords { chunk, shard, .. } => Some((*chunk, Some(shard.clone()))),
            _ => None,
        };
        if let (Some((chunk, shard)), Some(w)) = (read, self.procs[p].worker.as_ref()) {
            // A read queued before its shard stopped being read in the same
            // step has no room any more: its late answer is freed at once.
            let still_read = shard.is_some_and(|s| w.shard_status(&s).is_some());
            if let Err(message) = self.memory.read_sent(p, inc, chunk, w) {
                if still_read {
                    return Err(self.violation("memory", format!("{owner}: {message}")));
                }
            }
        }
        match &a {
            Action::Subscribe { sub, shard, .. } => {
                let local = self.local_now(p);
                self.oracles
                    .subscribe_sent(self.now, &owner, shard, local)?;
                if let Some(old) = self.procs[p].subs.get(shard) {
                    let msg = format!("{owner} subscribes {shard} ({sub:?}) while {old:?} is open");
                    return Err(self.violation("one-reader", msg));
                }
                let pr = &mut self.procs[p];
                pr.subs.insert(shard.clone(), *sub);
                pr.sub_shard.insert(*sub, shard.clone());
            }
            Action::Cancel { sub } => {
                let pr = &mut self.procs[p];
                if let Some(shard) = pr.sub_shard.remove(sub) {
                    if pr.subs.get(&shard) == Some(sub) {
                        pr.subs.remove(&shard);
                    }
                }
                let key = (p, inc, sub.raw());
                self.kinesis.close_subs(|k| *k == key);
                self.sub_ids.remove(&key);
                self.early_pulls.remove(&key);
                return Ok(());
            }
            Action::GetRecords { op, shard, .. } => {
                if let Some(old) = self.procs[p].polls.get(shard) {
                    let msg =
                        format!("{owner} GetRecords {shard} ({op:?}) while {old:?} is outstanding");
                    return Err(self.violation("one-reader", msg));
                }
                self.procs[p].polls.insert(shard.clone(), *op);
            }
            _ => {}
        }
        let graceful = match &a {
            Action::WriteLease {
                write: write @ LeaseWrite::Transfer { owner, token, .. },
                ..
            } => self.acks_complete(owner, write.shard(), *token),
            _ => false,
        };
        let delivery = self.net.route(&mut self.rng, self.now, p, Call::of(&a));
        let black_holed = matches!(delivery, Delivery::Lose { after } if after == CALL_DEADLINE);
        if black_holed {
            // Not a fault of the process: the stuck-request oracle checks
            // that it alone never fences it.
            let beat = matches!(a, Action::WriteHeartbeat { .. });
            self.stuck.black_holed((p, inc), self.now, beat);
            self.bounds.unhealthy((p, inc));
        } else if faulted(&delivery, Call::of(&a).service() == Service::Dynamo) {
            self.request_fault(p, inc);
            if let Action::Subscribe { sub, .. } | Action::Pull { sub, .. } = &a {
                self.subscription_fault(p, *sub);
            }
        }
        let (class, after) = match delivery {
            Delivery::Deliver { latency } => {
                self.q.push(
                    self.now + latency,
                    Ev::Arrive {
                        p,
                        inc,
                        action: a,
                        late: false,
                        graceful,
                    },
                );
                return Ok(());
            }
            Delivery::Fail { class, after } => (class, after),
            Delivery::Lose { after } => (a.timeout_class(), after),
            Delivery::Late { apply_after, after } => {
                self.q.push(
                    self.now + apply_after,
                    Ev::Arrive {
                        p,
                        inc,
                        action: a.clone(),
                        late: true,
                        graceful,
                    },
                );
                (a.timeout_class(), after)
            }
        };
        if let Action::Pull { sub, .. } = &a {
            // Only a partition fails a Pull: the connection breaks, an
            // established subscription fails once; a Subscribe still
            // failing reports for both.
            let key = (p, inc, sub.raw());
            self.early_pulls.remove(&key);
            match self.kinesis.subs.get_mut(&key) {
                Some(s) if !s.done => s.done = true,
                _ => return Ok(()),
            }
        }
        if let Some(input) = a.failed(class) {
            self.q.push(
                self.now + after,
                Ev::Respond {
                    p,
                    inc,
                    input,
                    payload: None,
                },
            );
        }
        Ok(())
    }

    /// A request reaches its service.
    fn arrive(&mut self, p: usize, inc: u64, a: Action) -> Check {
        let now = self.now;
        let back = |w: &mut World,
                    input: Input,
                    payload: Option<(ChunkId, usize, Vec<u64>)>,
                    lat: Micros| {
            if w.late {
                return;
            }
            w.q.push(
                now + lat,
                Ev::Respond {
                    p,
                    inc,
                    input,
                    payload,
                },
            );
        };
        match a {
            Action::ReadLeases { op, stream } => {
                let rows = self.dynamo.read_leases(&stream);
                let lat = self.net.reply_latency(&mut self.rng, Reply::Dynamo);
                if lat >= SPIKE {
                    self.request_fault(p, inc);
                }
                back(
                    self,
                    Input::Leases {
                        op,
                        result: Ok(rows),
                    },
                    None,
                    lat,
                );
            }
            Action::ReadHeartbeats { op } => {
                let rows = self.dynamo.read_beats();
                let lat = self.net.reply_latency(&mut self.rng, Reply::Dynamo);
                if lat >= SPIKE {
                    self.request_fault(p, inc);
                }
                back(
                    self,
                    Input::Heartbeats {
                        op,
                        result: Ok(rows),
                    },
                    None,
                    lat,
                );
            }
            Action::WriteHeartbeat { op, row } => {
                let applied = self.dynamo.put_beat(row);
                let reply = self.net.write_reply(&mut self.rng);
                if faulted(&reply, true) {
                    self.request_fault(p, inc);
                }
                let (result, lat) = reply_to_write(reply, applied);
                back(self, Input::HeartbeatWritten { op, result }, None, lat);
            }
            Action::DeleteLease { op, shard, token } => {
                let applied = self.dynamo.delete_lease(&shard, token);
                if applied.is_ok() {
                    self.trace.line(
                        self.now,
                        format_args!("table {shard} deleted (tok{})", token.0),
                    );
                }
                let reply = self.net.write_reply(&mut self.rng);
                if faulted(&reply, true) {
                    self.request_fault(p, inc);
                }
                let (result, lat) = reply_to_write(reply, applied);
                back(self, Input::LeaseDeleted { op, result }, None, lat);
            }
            Action::DeleteHeartbeat { op, owner, beat } => {
                let applied = self.dynamo.delete_beat(&owner, beat);
                let reply = self.net.write_reply(&mut self.rng);
                if faulted(&reply, true) {
                    self.request_fault(p, inc);
                }
                let (result, lat) = reply_to_write(reply, applied);
                back(self, Input::HeartbeatDeleted { op, result }, None, lat);
            }
            Action::WriteLease { op, write } => {
                // DynamoDB answers with the row as written (ALL_NEW).
                let mut written = None;
                let result = match self.dynamo.write_lease(&write) {
                    Ok((before, after)) => {
                        written = Some(after.clone());
                        let shard = self.kinesis.index_of(write.shard()).unwrap_or(usize::MAX);
                        let graceful =
                            self.graceful && matches!(write, LeaseWrite::Transfer { .. });
                        self.trace.line(
                            self.now,
                            format_args!(
                                "table {} owner={:?} tok{} cp={}",
                                after.shard,
                                after.owner,
                                after.token.0,
                                OptCp(after.checkpoint.as_ref())
                            ),
                        );
                        // A take applied ends a failover sample: the lease
                        // is another worker's (the taker may learn it late,
                        // through a lost answer: its own fault, not the
                        // fleet's failover).
                        if let LeaseWrite::Take { to, .. } = &write {
                            if let Some((cause, took, from)) =
                                self.bounds.read(self.now, write.shard(), to)?
                            {
                                self.trace.line(
                                    self.now,
                                    format_args!(
                                        "failover {} from {from} ({}) in {}ms",
                                        write.shard(),
                                        cause.name(),
                                        took / MS
                                    ),
                                );
                            }
                        }
                        if shard < self.oracles.shards.len() {
                            self.oracles.lease_written(
                                self.now,
                                shard,
                                &write,
                                before.as_ref(),
                                &after,
                                graceful,
                            )?;
                        }
                        if let LeaseWrite::Take {
                            expect_owner: Some(old),
                            expect_token,
                            to,
                            ..
                        } = &write
                        {
                            let asked = before
                                .as_ref()
                                .is_some_and(|b| b.pending_owner.as_ref() == Some(to));
                            if old != to && !asked {
                                self.forced_take(old, to, write.shard(), *expect_token);
                            }
                        }
                        Ok(())
                    }
                    Err(_) => Err(ErrorClass::ConditionalFailed),
                };
                let reply = self.net.write_reply(&mut self.rng);
                if faulted(&reply, true) {
                    self.request_fault(p, inc);
                }
                let (result, lat) = reply_to_write(reply, result);
                let row = written.filter(|_| result.is_ok()).map(Box::new);
                back(self, Input::LeaseWritten { op, result, row }, None, lat);
            }
            Action::ListShards { op, stream } => {
                let result = if let Some(s) = self.kinesis.stream_index(&stream) {
                    Ok(self.kinesis.list_shards(s, now))
                } else {
                    Err(ErrorClass::ResourceNotFound)
                };
                let lat = self.net.reply_latency(&mut self.rng, Reply::Control);
                back(self, Input::Shards { op, result }, None, lat);
            }
            Action::RegisterConsumer { op, name, stream } => {
                let delay = between(&mut self.rng, 2 * SEC, 20 * SEC);
                let result = self.kinesis.register_consumer(&stream, &name, now, delay);
                let lat = self.net.reply_latency(&mut self.rng, Reply::Register);
                back(self, Input::Consumer { op, result }, None, lat);
            }
            Action::DescribeConsumer {
                op,
                name,
                arn,
                stream,
            } => {
                let result = self
                    .kinesis
                    .describe_consumer(&stream, &name, arn.as_deref(), now);
                let lat = self.net.reply_latency(&mut self.rng, Reply::Control);
                back(self, Input::Consumer { op, result }, None, lat);
            }
            Action::Subscribe {
                sub,
                shard,
                consumer_arn,
                position,
                range: _,
            } => {
                let key = (p, inc, sub.raw());
                if self.procs[p].inc != inc || self.procs[p].state != ProcState::Running {
                    return Ok(());
                }
                match self
                    .kinesis
                    .subscribe(key, &shard, &consumer_arn, &position, now)
                {
                    Ok(()) => {
                        self.sub_ids.insert(key, sub);
                        self.trace.line(
                            now,
                            format_args!("kinesis subscribed {key:?} {shard} {}", Brief(&position)),
                        );
                        if let Some(chunk) = self.early_pulls.remove(&key) {
                            if let Some(s) = self.kinesis.subs.get_mut(&key) {
                                s.pending = Some(chunk);
                            }
                            self.wake(key, u64::MAX)?;
                        }
                    }
                    Err(class) => {
                        self.early_pulls.remove(&key);
                        let lat = self.net.reply_latency(&mut self.rng, Reply::Control);
                        back(self, Input::SubscriptionError { sub, class }, None, lat);
                    }
                }
            }
            Action::Pull { sub, chunk } => {
                let key = (p, inc, sub.raw());
                match self.kinesis.subs.get_mut(&key) {
                    Some(s) => {
                        if !s.done {
                            s.pending = Some(chunk);
                            self.wake(key, u64::MAX)?;
                        }
                    }
                    // Read before the subscription is established: the
                    // runtime's read waits for it.
                    None => {
                        self.early_pulls.insert(key, chunk);
                    }
                }
            }
            Action::GetShardIterator {
                op,
                shard,
                position,
            } => {
                let result = self.kinesis.get_shard_iterator(&shard, &position, now);
                let lat = self.net.reply_latency(&mut self.rng, Reply::Control);
                back(self, Input::Iterator { op, result }, None, lat);
            }
            Action::GetRecords {
                op,
                shard: _,
                iterator,
                limit,
                chunk,
                skip_through,
                range: _,
            } => {
                let throttle = self.net.throttles_get_records(&mut self.rng);
                if throttle {
                    self.request_fault(p, inc);
                }
                let result = if throttle {
                    Err(ErrorClass::Throttled)
                } else {
                    self.kinesis.get_records(&iterator, limit, now)
                };
                let lat = self.net.reply_latency(&mut self.rng, Reply::Records);
                match result {
                    Ok(ans) => {
                        let admit = skip_through.map(StartPosition::AtSubSequence);
                        let (records, ids) =
                            self.chunk_records(ans.shard, ans.from, ans.to, admit.as_ref())?;
                        let data = Chunk {
                            records,
                            millis_behind: ans.millis_behind,
                            continuation: None,
                            child_shards: ans.children,
                            kinesis_records: (ans.to - ans.from) as u32,
                        };
                        back(
                            self,
                            Input::Records {
                                op,
                                result: Ok((data, ans.next)),
                            },
                            Some((chunk, ans.shard, ids)),
                            lat,
                        );
                    }
                    Err(class) => back(
                        self,
                        Input::Records {
                            op,
                            result: Err(class),
                        },
                        None,
                        lat,
                    ),
                }
            }
            Action::Cancel { .. } => {}
        }
        Ok(())
    }

    /// Whether every batch `owner` delivered for `shard` under `token` was acked.
    fn acks_complete(&self, owner: &Owner, shard: &ShardRef, token: FencingToken) -> bool {
        let Some(idx) = self.kinesis.index_of(shard) else {
            return false;
        };
        self.procs
            .iter()
            .find(|pr| pr.owner() == *owner && pr.state == ProcState::Running)
            .is_some_and(|pr| {
                !pr.batches
                    .values()
                    .any(|(s, t, _)| *s == idx && *t == token)
            })
    }

    /// De-aggregate Kinesis records `from..to` of a shard as a runtime does.
    fn chunk_records(
        &self,
        shard: usize,
        from: usize,
        to: usize,
        admit: Option<&StartPosition>,
    ) -> Result<(Vec<RecordMeta>, Vec<u64>), Violation> {
        let s = &self.kinesis.shards[shard];
        let mut metas = Vec::new();
        let mut ids = Vec::new();
        for rec in &s.records[from..to] {
            // The runtime's rule, from the core: de-aggregation, range and
            // position filtering, sizes and the last-sub-record flag.
            let mut bad = None;
            kpl::expand(
                &rec.seq,
                &rec.data,
                rec.partition_key.len(),
                rec.arrival_ms,
                s.range,
                |ext| admit.is_none_or(|a| a.admits(ext)),
                |meta, payload| {
                    if bad.is_some() {
                        return;
                    }
                    let mut meta = meta;
                    let data = match payload {
                        UserPayload::Whole => {
                            // The padding the simulation does not store.
                            meta.bytes = meta.bytes.saturating_add(rec.pad);
                            rec.data.as_slice()
                        }
                        UserPayload::Sub(sub) => sub.data,
                    };
                    let id = data
                        .get(..8)
                        .and_then(|b| <[u8; 8]>::try_from(b).ok())
                        .map(u64::from_le_bytes)
                        .filter(|&id| {
                            self.oracles
                                .records
                                .get(id as usize)
                                .is_some_and(|r| r.ext == meta.ext)
                        });
                    match id {
                        Some(id) => {
                            metas.push(meta);
                            ids.push(id);
                        }
                        None => bad = Some(meta.ext),
                    }
                },
            );
            if let Some(ext) = bad {
                return Err(self.violation(
                    "payload",
                    format!("record {ext} of shard {shard} does not decode to its id"),
                ));
            }
        }
        Ok((metas, ids))
    }

    /// A fault hit subscription `sub` of process `p` (the `stall` bound of
    /// a shard recovering from a silence restarts).
    fn subscription_fault(&mut self, p: usize, sub: SubId) {
        if let Some(shard) = self.procs[p].sub_shard.get(&sub) {
            let owner = self.procs[p].owner();
            self.bounds.subscription_fault(self.now, &owner, shard);
        }
    }

    /// Answer a subscription's pending Pull if an event is due.
    fn wake(&mut self, key: SubKey, gen: u64) -> Check {
        let Some(s) = self.kinesis.subs.get(&key) else {
            return Ok(());
        };
        if gen != u64::MAX && gen != s.wake_gen {
            return Ok(());
        }
        if s.pending.is_none() || s.done {
            return Ok(());
        }
        let Some(&sub) = self.sub_ids.get(&key) else {
            return Ok(());
        };
        let (p, inc) = (key.0, key.1);
        let lat = self.net.reply_latency(&mut self.rng, Reply::Event);
        if let Some(class) = self.net.breaks_stream(&mut self.rng) {
            self.request_fault(p, inc);
            self.subscription_fault(p, sub);
            if let Some(s) = self.kinesis.subs.get_mut(&key) {
                s.done = true;
            }
            self.q.push(
                self.now + lat,
                Ev::Respond {
                    p,
                    inc,
                    input: Input::SubscriptionError { sub, class },
                    payload: None,
                },
            );
            return Ok(());
        }
        if self.net.goes_silent(&mut self.rng) {
            // Nothing more arrives on it: the worker's idle watchdog must
            // cancel it and resubscribe (the `stall` bound asserts the
            // shard's progress within watchdog + backoff).
            self.silenced += 1;
            self.trace
                .line(self.now, format_args!("kinesis silent {key:?}"));
            if let Some(s) = self.kinesis.subs.get_mut(&key) {
                s.done = true;
            }
            let owner = self.procs[p].owner();
            self.bounds.silenced(self.now, &owner);
            return Ok(());
        }
        let position = self.kinesis.subs[&key].position.clone();
        match self.kinesis.answer_pull(&key, self.now) {
            None => {}
            Some(PullAnswer::Later(at)) => {
                let s = self.kinesis.subs.get_mut(&key).expect("present");
                s.wake_gen += 1;
                let gen = s.wake_gen;
                self.q.push(at, Ev::Wake { key, gen });
            }
            Some(PullAnswer::Ended) => {
                self.q.push(
                    self.now + lat,
                    Ev::Respond {
                        p,
                        inc,
                        input: Input::SubscriptionEnded { sub },
                        payload: None,
                    },
                );
            }
            Some(PullAnswer::Gone) => {
                self.q.push(
                    self.now + lat,
                    Ev::Respond {
                        p,
                        inc,
                        input: Input::SubscriptionError {
                            sub,
                            class: ErrorClass::ResourceNotFound,
                        },
                        payload: None,
                    },
                );
            }
            Some(PullAnswer::TakenOver) => {
                self.q.push(
                    self.now + lat,
                    Ev::Respond {
                        p,
                        inc,
                        input: Input::SubscriptionError {
                            sub,
                            class: ErrorClass::ResourceInUse,
                        },
                        payload: None,
                    },
                );
            }
            Some(PullAnswer::Event {
                chunk,
                from,
                to,
                continuation,
                children,
                millis_behind,
            }) => {
                let shard = self.kinesis.subs[&key].shard;
                let (records, ids) = self.chunk_records(shard, from, to, Some(&position))?;
                if to > from
                    && records.is_empty()
                    && continuation.is_some()
                    && !self.kinesis.shards[shard].is_open()
                {
                    // Not the shard's end, though nothing in it is kept.
                    self.report.foreign_only_events += 1;
                }
                let data = Chunk {
                    records,
                    millis_behind,
                    continuation,
                    child_shards: children,
                    kinesis_records: (to - from) as u32,
                };
                self.q.push(
                    self.now + lat,
                    Ev::Respond {
                        p,
                        inc,
                        input: Input::SubscriptionEvent { sub, chunk, data },
                        payload: Some((chunk, shard, ids)),
                    },
                );
            }
        }
        Ok(())
    }

    /// A response reaches worker `p`.
    fn respond(
        &mut self,
        p: usize,
        inc: u64,
        input: Input,
        payload: Option<(ChunkId, usize, Vec<u64>)>,
    ) -> Check {
        let pr = &mut self.procs[p];
        if pr.inc != inc || pr.state != ProcState::Running || pr.worker.is_none() {
            return Ok(());
        }
        let (input, intact) = self.net.receive(self.now, p, input);
        let payload = payload.filter(|_| intact);
        if pr.paused_until.is_some() {
            pr.backlog.push(Pending::Input(input, payload));
            return Ok(());
        }
        self.feed(p, input, payload)
    }

    pub(crate) fn feed(
        &mut self,
        p: usize,
        input: Input,
        payload: Option<(ChunkId, usize, Vec<u64>)>,
    ) -> Check {
        let owner = self.procs[p].owner();
        trace_fmt::input_line(&mut self.trace, self.now, p, &owner, &input);
        if let (
            Some((chunk, _, _)),
            Input::Records {
                result: Ok((data, _)),
                ..
            }
            | Input::SubscriptionEvent { data, .. },
        ) = (&payload, &input)
        {
            let inc = self.procs[p].inc;
            if let Some(w) = self.procs[p].worker.as_ref() {
                self.memory.answer(p, inc, *chunk, data, w);
            }
        }
        let pr = &mut self.procs[p];
        if let Some((chunk, shard, ids)) = payload {
            pr.chunks.insert(chunk, (shard, ids));
        }
        // A read that shows the shard caught up is progress (`stall`).
        let caught_up = match &input {
            Input::Records {
                op,
                result: Ok((data, _)),
            } if data.millis_behind == 0 => pr
                .polls
                .iter()
                .find(|(_, o)| *o == op)
                .map(|(s, _)| s.clone()),
            Input::SubscriptionEvent { sub, data, .. } if data.millis_behind == 0 => {
                pr.sub_shard.get(sub).cloned()
            }
            _ => None,
        };
        if let Some(shard) = caught_up {
            self.bounds.progress(self.now, &owner, &shard);
        }
        let pr = &mut self.procs[p];
        match &input {
            Input::SubscriptionError { sub, class } => {
                if let Some(shard) = pr.sub_shard.remove(sub) {
                    if pr.subs.get(&shard) == Some(sub) {
                        pr.subs.remove(&shard);
                        let local = pr.clock.local(self.now).max(pr.last_local);
                        self.oracles.subscribe_failed(
                            &owner,
                            &shard,
                            local,
                            *class == ErrorClass::ResourceInUse,
                        );
                    }
                }
                self.sub_ids.remove(&(p, pr.inc, sub.raw()));
            }
            Input::SubscriptionEnded { sub } => {
                if let Some(shard) = pr.sub_shard.remove(sub) {
                    if pr.subs.get(&shard) == Some(sub) {
                        pr.subs.remove(&shard);
                    }
                }
            }
            Input::SubscriptionEvent { sub, data, .. } if data.continuation.is_none() => {
                if let Some(shard) = pr.sub_shard.remove(sub) {
                    if pr.subs.get(&shard) == Some(sub) {
                        pr.subs.remove(&shard);
                    }
                }
            }
            Input::Records { op, .. } => {
                pr.polls.retain(|_, o| o != op);
            }
            _ => {}
        }
        self.step(p, |w, now| w.handle_input(now, input))
    }

    // ----- resharding ---------------------------------------------------------

    /// Split the open shard with index `i` (wrapping) among open shards, up to
    /// the open-shard limit.
    pub(crate) fn split(&mut self, i: usize) -> Check {
        if self.open_shards >= self.p.max_open_shards {
            return Ok(());
        }
        let open: Vec<usize> = (0..self.kinesis.shards.len())
            .filter(|&s| self.kinesis.shards[s].is_open())
            .collect();
        let shard = open[i % open.len()];
        let stream = self.kinesis.shards[shard].stream;
        let map = self.open_ranges(stream);
        if let Some(children) = self.kinesis.split(shard, self.now) {
            self.stale_map[stream] = map;
            self.oracles.shards[shard].closed = true;
            for _ in children {
                self.oracles.add_shard(vec![shard]);
            }
            self.open_shards += 1;
            self.wake_shard(shard)?;
        }
        Ok(())
    }

    /// Delete stream `s` (wrapping) and create it again under the same name
    /// ([`Op::RecreateStream`]).
    pub(crate) fn recreate_stream(&mut self, s: usize) -> Check {
        let stream = s % self.kinesis.streams.len();
        let before = self.kinesis.shards.len();
        let deleted = self
            .kinesis
            .recreate_stream(stream, self.p.shards, self.now);
        for &i in &deleted {
            self.oracles.deleted(i);
        }
        self.open_shards = self.open_shards + (self.kinesis.shards.len() - before)
            - deleted
                .iter()
                .filter(|&&i| self.kinesis.shards[i].closed_at == Some(self.now))
                .count();
        for _ in before..self.kinesis.shards.len() {
            self.oracles.add_shard(Vec::new());
        }
        self.stale_map[stream] = self.open_ranges(stream);
        // Rows the old stream's workers collected named shards of the old
        // stream; the new one reuses the ids (its shards' rows are judged
        // on their own).
        let id = self.kinesis.streams[stream].clone();
        self.dynamo.deleted.retain(|shard| shard.stream != id);
        // Rows with no checkpoint apply to the new shards of their ids.
        let inherited: Vec<(usize, u64)> = self
            .dynamo
            .leases
            .iter()
            .filter(|(shard, row)| shard.stream == id && row.checkpoint.is_none())
            .filter_map(|(shard, row)| Some((self.kinesis.index_of(shard)?, row.created_ms)))
            .collect();
        for (i, created_ms) in inherited {
            self.oracles.row_inherited(i, created_ms);
        }
        self.recreated.insert(stream);
        self.last_recreation = Some(self.now);
        // A fault until its quarantines end: joins meanwhile are not
        // judged fault-free.
        self.bounds.disrupted();
        let until = self.now + QUARANTINE;
        self.last_disruption = Some(self.last_disruption.unwrap_or(0).max(until));
        self.report.recreated.0 += 1;
        for i in deleted {
            self.wake_shard(i)?;
        }
        Ok(())
    }

    /// A worker of process `p` stopped because its lease table holds rows
    /// of an earlier stream of the same name; the operator does what its
    /// error says: every process of its application is stopped, the lease
    /// rows of the application's recreated streams are deleted, and the
    /// processes start again 5 s later (reading the new streams from their
    /// start).
    fn operator_clears_stale_rows(&mut self, p: usize) -> Check {
        let app = self.procs[p].app;
        let streams = self.app_streams(app);
        for q in 0..self.procs.len() {
            if self.procs[q].app != app || self.procs[q].state != ProcState::Running {
                continue;
            }
            self.disrupt_for_operator(q);
            self.procs[q].state = ProcState::Crashed;
            self.leave(q);
            self.q.push(self.now + 5 * SEC, Ev::Op(Op::Restart(q)));
        }
        let recreated: Vec<&StreamId> = streams
            .iter()
            .filter(|s| {
                self.kinesis
                    .stream_index(s)
                    .is_some_and(|i| self.recreated.contains(&i))
            })
            .collect();
        self.report.recreated.1 += 1;
        let before = self.dynamo.leases.len();
        let deleted: Vec<usize> = self
            .dynamo
            .leases
            .keys()
            .filter(|shard| recreated.contains(&&shard.stream))
            .filter_map(|shard| self.kinesis.index_of(shard))
            .collect();
        for i in deleted {
            self.oracles.row_deleted(i);
        }
        self.dynamo
            .leases
            .retain(|shard, _| !recreated.contains(&&shard.stream));
        self.dynamo
            .deleted
            .retain(|shard| !recreated.contains(&&shard.stream));
        self.trace.line(
            self.now,
            format_args!(
                "operator deletes {} lease rows of {recreated:?}",
                before - self.dynamo.leases.len()
            ),
        );
        Ok(())
    }

    /// Merge the pair of adjacent open shards with index `i` (wrapping) among
    /// such pairs.
    pub(crate) fn merge(&mut self, i: usize) -> Check {
        let pairs = self.kinesis.adjacent_open();
        if pairs.is_empty() {
            return Ok(());
        }
        let (l, r) = pairs[i % pairs.len()];
        let stream = self.kinesis.shards[l].stream;
        let map = self.open_ranges(stream);
        if self.kinesis.merge(l, r, self.now).is_some() {
            self.stale_map[stream] = map;
            self.oracles.shards[l].closed = true;
            self.oracles.shards[r].closed = true;
            self.oracles.add_shard(vec![l, r]);
            self.open_shards -= 1;
            self.wake_shard(l)?;
            self.wake_shard(r)?;
        }
        Ok(())
    }

    /// The hash ranges of a stream's open shards (its current shard map).
    fn open_ranges(&self, stream: usize) -> Vec<HashRange> {
        let shards = self.kinesis.stream_shards[stream].iter();
        let open = shards
            .map(|&i| &self.kinesis.shards[i])
            .filter(|s| s.is_open());
        open.map(|s| s.range).collect()
    }

    pub(crate) fn wake_shard(&mut self, shard: usize) -> Check {
        for key in self.kinesis.waiting_on(shard) {
            self.wake(key, u64::MAX)?;
        }
        Ok(())
    }

    // ----- producer ----------------------------------------------------------

    fn produce(&mut self) -> Check {
        for stream in 0..self.kinesis.streams.len() {
            self.produce_stream(stream)?;
        }
        if self.p.kpl_stale > 0.0 && self.rng.chance(self.p.kpl_stale) {
            self.produce_misrouted()?;
        }
        if self.faults_on() {
            self.produce_adversarial()?;
        }
        if self.p.retention < 24 * 3600 * SEC {
            for (shard, range) in self.kinesis.trim(self.now) {
                self.oracles.trimmed(self.now, shard, range)?;
            }
        }
        Ok(())
    }

    /// One producer tick's plain records and KPL aggregates on a stream.
    fn produce_stream(&mut self, stream: usize) -> Check {
        let n = self.p.records_per_tick as usize;
        let mut by_shard: BTreeMap<usize, Vec<usize>> = BTreeMap::new();
        for _ in 0..n {
            let k = self.rng.below(self.keys.len() as u64) as usize;
            let shard = self.kinesis.route(stream, self.keys[k].1);
            by_shard.entry(shard).or_default().push(k);
        }
        for (shard, keys) in by_shard {
            let mut i = 0;
            while i < keys.len() {
                let take = if self.rng.chance(self.p.agg_prob) {
                    (2 + self.rng.below(7) as usize).min(keys.len() - i)
                } else {
                    1
                };
                let group = &keys[i..i + take];
                i += take;
                let first_id = self.oracles.records.len() as u64;
                let ids: Vec<u64> = (first_id..first_id + group.len() as u64).collect();
                let payloads: Vec<[u8; 8]> = ids.iter().map(|id| id.to_le_bytes()).collect();
                let pk = self.keys[group[0]].0.clone();
                let data = if take == 1 {
                    payloads[0].to_vec()
                } else {
                    let recs: Vec<kpl::AggRecord<'_>> = group
                        .iter()
                        .zip(&payloads)
                        .map(|(&k, d)| kpl::AggRecord {
                            partition_key: self.keys[k].0.as_bytes(),
                            explicit_hash_key: None,
                            data: d,
                        })
                        .collect();
                    kpl::aggregate(&recs)
                };
                let gap = self.rng.below(1000);
                let kidx = self.kinesis.put(shard, pk, data, self.now, gap);
                if self.p.big_records && take == 1 && self.rng.chance(0.02) {
                    // Up to 1 MiB (the AWS record ceiling).
                    self.kinesis.shards[shard].records[kidx].pad = self.rng.below(1 << 20) as u32;
                }
                let seq = self.kinesis.shards[shard].records[kidx].seq.clone();
                let arrival_ms = self.kinesis.shards[shard].records[kidx].arrival_ms;
                let got = self.oracles.written(
                    shard,
                    arrival_ms,
                    (0..take as u32).map(|s| ExtSeq::new(seq.clone(), s)),
                );
                debug_assert_eq!(got, ids);
            }
            self.wake_shard(shard)?;
        }
        Ok(())
    }
}

impl World {
    /// One misrouted KPL aggregate (`Params::kpl_stale`): either built
    /// from the shard map before the latest split or merge (its keys are
    /// those of one old shard; it lands where its first key routes now) or
    /// put with an explicit hash key of a random point (it lands wherever
    /// that routes). Some sub-records carry their own explicit hash key.
    /// The sub-records whose hash key lies outside the range of the shard
    /// it landed on are recorded as foreign: every consumer drops them.
    fn produce_misrouted(&mut self) -> Check {
        let n = 2 + self.rng.below(7) as usize;
        let explicit = self.rng.chance(0.3);
        let streams = self.kinesis.streams.len() as u64;
        let stream = if streams > 1 {
            self.rng.below(streams) as usize
        } else {
            0
        };
        let random_key =
            |rng: &mut Rng| (u128::from(rng.next_u64()) << 64) | u128::from(rng.next_u64());
        let keys: Vec<usize> = if explicit {
            (0..n)
                .map(|_| self.rng.below(self.keys.len() as u64) as usize)
                .collect()
        } else {
            let map = &self.stale_map[stream];
            let old = map[self.rng.below(map.len() as u64) as usize];
            let inside: Vec<usize> = (0..self.keys.len())
                .filter(|&k| old.contains(self.keys[k].1))
                .collect();
            let from = if inside.is_empty() {
                (0..self.keys.len()).collect()
            } else {
                inside
            };
            (0..n)
                .map(|_| from[self.rng.below(from.len() as u64) as usize])
                .collect()
        };
        // (partition key, own explicit hash key, hash key) per sub-record.
        let subs: Vec<(String, Option<String>, u128)> = keys
            .iter()
            .map(|&k| {
                let (pk, hash) = self.keys[k].clone();
                if self.rng.chance(0.2) {
                    let ehk = random_key(&mut self.rng);
                    (pk, Some(ehk.to_string()), ehk)
                } else {
                    (pk, None, hash)
                }
            })
            .collect();
        let route = if explicit {
            random_key(&mut self.rng)
        } else {
            subs[0].2
        };
        let shard = self.kinesis.route(stream, route);
        let range = self.kinesis.shards[shard].range;
        let foreign: Vec<bool> = subs.iter().map(|s| !range.contains(s.2)).collect();
        let first_id = self.oracles.records.len() as u64;
        let payloads: Vec<[u8; 8]> = (first_id..first_id + n as u64)
            .map(u64::to_le_bytes)
            .collect();
        let recs: Vec<kpl::AggRecord<'_>> = subs
            .iter()
            .zip(&payloads)
            .map(|((pk, ehk, _), d)| kpl::AggRecord {
                partition_key: pk.as_bytes(),
                explicit_hash_key: ehk.as_ref().map(String::as_bytes),
                data: d,
            })
            .collect();
        let data = kpl::aggregate(&recs);
        let gap = self.rng.below(1000);
        let pk = subs[0].0.clone();
        let kidx = self.kinesis.put(shard, pk, data, self.now, gap);
        let rec = &self.kinesis.shards[shard].records[kidx];
        let (seq, arrival_ms) = (rec.seq.clone(), rec.arrival_ms);
        let dropped = foreign.iter().filter(|&&f| f).count();
        self.trace.line(
            self.now,
            format_args!(
                "kpl misrouted to shard {shard} ({}): {dropped} of {n} sub-records outside its range",
                if explicit { "explicit hash key" } else { "stale map" }
            ),
        );
        let got = self.oracles.written_kpl(
            shard,
            arrival_ms,
            (0..n as u32).map(|s| ExtSeq::new(seq.clone(), s)),
            &foreign,
        );
        debug_assert_eq!(got.len(), n);
        self.wake_shard(shard)
    }

    /// The memory faults of the fault phase: a burst of up to 10,000
    /// records of up to 1 KiB on one shard (`big_records`: GetRecords
    /// answers of 10,000 records or 10 MiB), and KPL aggregates of hundreds
    /// of sub-records under one 256-byte partition key (`kpl_bombs`: a few
    /// KB on the wire, a hundred times that expanded). Draws only when the
    /// scenario enables them.
    fn produce_adversarial(&mut self) -> Check {
        // Bursts only where a 10,000-record answer fits the record budget
        // (a 20-record pool drains 10,000 records slower than the heal
        // phase allows).
        let burst = self.p.big_records && self.p.pool_records >= 10_000 && self.rng.chance(0.005);
        // Aggregates of up to 1,000 sub-records only where the record
        // budget holds one (reads are sized by the largest record: a
        // 20-record pool reads them alone, slower than they are written).
        let bomb = self.p.kpl_bombs && self.p.pool_records >= 1000 && self.rng.chance(0.05);
        if !burst && !bomb {
            return Ok(());
        }
        let k = self.rng.below(self.keys.len() as u64) as usize;
        let (key, hash) = self.keys[k].clone();
        let shard = self.kinesis.route(0, hash);
        if burst {
            let n = 1000 + self.rng.below(9001);
            for _ in 0..n {
                let id = self.oracles.records.len() as u64;
                let gap = self.rng.below(10);
                let kidx =
                    self.kinesis
                        .put(shard, key.clone(), id.to_le_bytes().to_vec(), self.now, gap);
                let rec = &mut self.kinesis.shards[shard].records[kidx];
                rec.pad = self.rng.below(1024) as u32;
                let (seq, arrival_ms) = (rec.seq.clone(), rec.arrival_ms);
                let got = self
                    .oracles
                    .written(shard, arrival_ms, [ExtSeq::new(seq, 0)]);
                debug_assert_eq!(got, vec![id]);
            }
        }
        if bomb {
            let n = 100 + self.rng.below(900) as usize;
            let first_id = self.oracles.records.len() as u64;
            let payloads: Vec<[u8; 8]> = (first_id..first_id + n as u64)
                .map(u64::to_le_bytes)
                .collect();
            let long_key = "b".repeat(256);
            let ehk = hash.to_string();
            let recs: Vec<kpl::AggRecord<'_>> = payloads
                .iter()
                .map(|d| kpl::AggRecord {
                    partition_key: long_key.as_bytes(),
                    explicit_hash_key: Some(ehk.as_bytes()),
                    data: d,
                })
                .collect();
            let data = kpl::aggregate(&recs);
            let gap = self.rng.below(1000);
            let kidx = self.kinesis.put(shard, key, data, self.now, gap);
            let rec = &self.kinesis.shards[shard].records[kidx];
            let (seq, arrival_ms) = (rec.seq.clone(), rec.arrival_ms);
            let got = self.oracles.written(
                shard,
                arrival_ms,
                (0..n as u32).map(|s| ExtSeq::new(seq.clone(), s)),
            );
            debug_assert_eq!(got.len(), n);
        }
        self.wake_shard(shard)
    }
}

/// A DynamoDB leg at least this slow met a latency spike (normal legs
/// take at most 6 ms, spikes add 150 ms or more per leg).
const SPIKE: Micros = 100 * MS;

/// Whether a request met an injected fault: it failed, its response was
/// lost, or (DynamoDB) it met a latency spike.
fn faulted(d: &Delivery, dynamo: bool) -> bool {
    match d {
        Delivery::Deliver { latency } => dynamo && *latency >= SPIKE,
        Delivery::Fail { .. } | Delivery::Lose { .. } | Delivery::Late { .. } => true,
    }
}

/// The result and latency of a DynamoDB write's response: `applied` as
/// delivered, or Ambiguous when the response is lost.
fn reply_to_write(
    reply: Delivery,
    applied: Result<(), ErrorClass>,
) -> (Result<(), ErrorClass>, Micros) {
    match reply {
        Delivery::Deliver { latency } => (applied, latency),
        Delivery::Fail { class, after } => (Err(class), after),
        Delivery::Lose { after } | Delivery::Late { after, .. } => {
            (Err(ErrorClass::unknown_outcome(true)), after)
        }
    }
}

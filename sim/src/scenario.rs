//! Scenarios: the parameters of one run, the fault ops, swarm drawing of
//! fault rates from a seed, and the per-run report.
//!
//! Models: what a run looks like (stream size, fleet size, retrieval mode,
//! producer, phases) and which faults happen how often. Following swarm
//! testing (TigerBeetle's VOPR), each fault kind is switched off for about
//! half the seeds and its rate drawn for the others, so every combination
//! of faults shows up across seeds. Scripted ops (fixed-seed tests, the
//! proptest suite) use the same [`Op`]s as random faults: one code path.
//!
//! Invariants: a [`Params`] is a pure function of (scenario name, seed).

use kinesin_core::rng::Rng;

use crate::dynamo::WriteCounts;
use crate::oracle::Violation;
use crate::sched::{Micros, MS, SEC};

/// One fault or fleet change. Process indices wrap around the fleet size.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Op {
    /// The process dies: memory lost, table kept.
    Crash(usize),
    /// A crashed or departed process starts again (new incarnation).
    Restart(usize),
    /// The process does not run for this long, then resumes (a zombie if
    /// longer than the failover time).
    Stall(usize, Micros),
    /// The process cannot reach DynamoDB for this long.
    CutDynamo(usize, Micros),
    /// The process cannot reach Kinesis for this long.
    CutKinesis(usize, Micros),
    /// One direction of DynamoDB fails for this long: its reads (`true`;
    /// its writes, heartbeats included, still succeed) or its writes
    /// (`false`; its reads still succeed). A half-broken path: a proxy,
    /// IAM denying one action, a throttled index.
    CutDynamoOneWay(usize, Micros, bool),
    /// The process's sink stops acknowledging for this long.
    SinkStall(usize, Micros),
    /// Graceful shutdown of the process.
    Shutdown(usize),
    /// A new process joins the fleet.
    Join,
    /// Split the open shard with this index among open shards.
    Split(usize),
    /// Merge the pair of adjacent open shards with this index among pairs.
    Merge(usize),
    /// A second live process starts with this process's worker id (a
    /// copy-pasted config, a deployment that overlapped): a later
    /// incarnation of the same id while the first still runs.
    Impostor(usize),
    /// DeleteStream then CreateStream under the same name (the same ARN,
    /// a new creation time) for the stream with this index (wrapping): the
    /// old stream's shards and unread records are gone (excused), the new
    /// stream's shards are named from `shardId-000000000000` again and
    /// every record written to them must be delivered; no row of the old
    /// stream may be applied to them.
    RecreateStream(usize),
}

/// Fault rates (per simulated hour for ops, probabilities per request).
#[derive(Clone, Debug, PartialEq)]
pub struct Faults {
    /// Process crashes per hour.
    pub crash: f64,
    /// Probability a crashed process restarts (after 5-60 s).
    pub restart_prob: f64,
    /// Stalls per hour.
    pub stall: f64,
    /// Partitions from DynamoDB per hour.
    pub cut_dynamo: f64,
    /// Partitions from Kinesis per hour.
    pub cut_kinesis: f64,
    /// Sink stalls per hour.
    pub sink_stall: f64,
    /// Graceful shutdowns per hour (the process rejoins later with
    /// probability `restart_prob`).
    pub shutdown: f64,
    /// Joins per hour.
    pub join: f64,
    /// Splits per hour.
    pub split: f64,
    /// Merges per hour.
    pub merge: f64,
    /// DynamoDB: throttled (not applied).
    pub dynamo_throttle: f64,
    /// DynamoDB: transient error (not applied).
    pub dynamo_error: f64,
    /// DynamoDB: applied, response lost (Ambiguous after the timeout).
    pub dynamo_ambiguous: f64,
    /// DynamoDB: a latency spike (300 ms - 1.5 s).
    pub dynamo_spike: f64,
    /// DynamoDB: the request is black-holed (never answered; it fails at
    /// the driver's 15 s call deadline) while the next ones work.
    pub dynamo_blackhole: f64,
    /// Kinesis calls: transient error or throttling.
    pub kinesis_error: f64,
    /// EFO: an event read fails mid-stream.
    pub efo_stream_error: f64,
    /// EFO: the subscription goes silent instead of answering a read (a
    /// half-open connection: no event, no error, no end, ever).
    pub efo_silent: f64,
    /// Sink: a batch is nacked.
    pub sink_nack: f64,
    /// Sink: mean ack delay.
    pub sink_ack_mean: Micros,
    /// Max clock rate drift (ppm).
    pub drift_ppm_max: i64,
    /// DynamoDB: a lease write held up on the way (a retransmit queue, a
    /// slow node) and applied 2.5-20 s later, long after its caller gave
    /// up on it (Ambiguous at the SDK timeout).
    pub dynamo_late: f64,
    /// One-way DynamoDB failures per hour ([`Op::CutDynamoOneWay`]).
    pub cut_dynamo_one_way: f64,
    /// Second processes with a running worker's id, per hour
    /// ([`Op::Impostor`]).
    pub impostor: f64,
    /// Streams deleted and recreated under the same name per hour
    /// ([`Op::RecreateStream`]; drawn in 15% of swarm seeds).
    pub recreate_stream: f64,
}

impl Faults {
    /// No faults at all (clocks still drift a little).
    pub fn none() -> Self {
        Faults {
            crash: 0.0,
            restart_prob: 1.0,
            stall: 0.0,
            cut_dynamo: 0.0,
            cut_kinesis: 0.0,
            sink_stall: 0.0,
            shutdown: 0.0,
            join: 0.0,
            split: 0.0,
            merge: 0.0,
            dynamo_throttle: 0.0,
            dynamo_error: 0.0,
            dynamo_ambiguous: 0.0,
            dynamo_spike: 0.0,
            dynamo_blackhole: 0.0,
            kinesis_error: 0.0,
            efo_stream_error: 0.0,
            efo_silent: 0.0,
            sink_nack: 0.0,
            sink_ack_mean: 5 * MS,
            drift_ppm_max: 10_000,
            dynamo_late: 0.0,
            cut_dynamo_one_way: 0.0,
            impostor: 0.0,
            recreate_stream: 0.0,
        }
    }

    /// Rates drawn from the seed: each kind off for about half the seeds.
    pub fn swarm(rng: &mut Rng) -> Self {
        let mut pick = |hi: f64| {
            if rng.chance(0.5) {
                0.0
            } else {
                rng.unit_f64() * hi
            }
        };
        let mut faults = Faults {
            crash: pick(20.0),
            restart_prob: 0.7,
            stall: pick(20.0),
            cut_dynamo: pick(20.0),
            cut_kinesis: pick(20.0),
            sink_stall: pick(20.0),
            shutdown: pick(8.0),
            join: pick(8.0),
            split: pick(8.0),
            merge: pick(6.0),
            dynamo_throttle: pick(0.05),
            dynamo_error: pick(0.05),
            dynamo_ambiguous: pick(0.05),
            dynamo_spike: pick(0.02),
            // Drawn by `Params::swarm` after the rest (earlier draws stay).
            dynamo_blackhole: 0.0,
            kinesis_error: pick(0.05),
            efo_stream_error: pick(0.02),
            // Drawn by `Params::swarm` after the rest (earlier draws stay).
            efo_silent: 0.0,
            sink_nack: pick(0.1),
            // Slow enough to hold checkpoints back, fast enough for the fleet
            // to keep up with the producer (the heal phase must catch up).
            sink_ack_mean: if rng.chance(0.5) {
                2 * MS
            } else {
                MS + rng.below(100) * MS
            },
            drift_ppm_max: 10_000,
            dynamo_late: 0.0,
            cut_dynamo_one_way: 0.0,
            impostor: 0.0,
            recreate_stream: 0.0,
        };
        // Drawn last: the draws of the kinds before it are those of the
        // seeds that predate it.
        faults.dynamo_late = if rng.chance(0.5) {
            0.0
        } else {
            rng.unit_f64() * 0.02
        };
        faults.cut_dynamo_one_way = if rng.chance(0.5) {
            0.0
        } else {
            rng.unit_f64() * 20.0
        };
        faults.impostor = if rng.chance(0.5) {
            0.0
        } else {
            rng.unit_f64() * 4.0
        };
        faults
    }

    /// Ops per hour, by kind (for the fault clock).
    pub(crate) fn op_rates(&self) -> [f64; 12] {
        [
            self.crash,
            self.stall,
            self.cut_dynamo,
            self.cut_kinesis,
            self.sink_stall,
            self.shutdown,
            self.join,
            self.split,
            self.merge,
            self.cut_dynamo_one_way,
            self.impostor,
            self.recreate_stream,
        ]
    }
}

/// Everything that defines one run.
#[derive(Clone, Debug, PartialEq)]
pub struct Params {
    /// Scenario name (for the replay command).
    pub scenario: String,
    /// The seed every sub-seed derives from.
    pub seed: u64,
    /// Initial open shards.
    pub shards: usize,
    /// Initial workers (of each application).
    pub workers: usize,
    /// Applications sharing the one lease table, each its own fleet (of
    /// `workers` initial processes, distinct worker ids) and its own
    /// streams (Bento's schema makes a shared table natural). Balancing,
    /// failover and the fair share are judged per application.
    pub apps: usize,
    /// Streams each application consumes (one `Config` listing them all),
    /// each of `shards` initial shards.
    pub streams_per_app: usize,
    /// Enhanced Fan-Out (else polling).
    pub efo: bool,
    /// Split some shards before the fleet starts (closed parents with data).
    pub pre_split: bool,
    /// Fault phase length.
    pub fault_us: Micros,
    /// Heal phase bound: all shards held and caught up within it.
    pub heal_us: Micros,
    /// Producer tick.
    pub produce_every: Micros,
    /// User records per producer tick.
    pub records_per_tick: u32,
    /// Distinct partition keys.
    pub keys: u32,
    /// Probability that a group of records is written as one KPL aggregate.
    pub agg_prob: f64,
    /// Retention period.
    pub retention: Micros,
    /// EFO events on an idle subscription.
    pub efo_idle_event: Micros,
    /// Every EFO subscription starts with an event without records whose
    /// continuation is behind the starting point.
    pub efo_empty_first_event: bool,
    /// Some GetRecords responses are empty although records follow.
    pub empty_get_records: bool,
    /// Shards without a checkpoint start at LATEST (else TRIM_HORIZON);
    /// records before a shard's anchor are excused from `no-loss`.
    pub start_latest: bool,
    /// Shards without a checkpoint start AT_TIMESTAMP of this simulated
    /// time (µs from the run's start, before the fleet, which then starts
    /// at 10 s with the producer running from 0; exclusive with
    /// `start_latest`):
    /// records that arrived before it are excused from `no-loss`, every
    /// later one is due, in parents and children alike.
    pub start_at_us: Option<Micros>,
    /// Batching count.
    pub batch_count: u32,
    /// `checkpoint_limit`.
    pub checkpoint_limit: u32,
    /// Pool budget (records).
    pub pool_records: u64,
    /// Pool budget (bytes).
    pub pool_bytes: u64,
    /// `Config::max_lease_writes_in_flight` (checkpoint writes wait past
    /// it; small in some swarm seeds so the limit binds at a few shards).
    pub max_lease_writes: usize,
    /// `Config::max_read_calls_in_flight` (polling calls wait past it;
    /// small in some swarm seeds so the limit binds at a few shards, hung
    /// calls included).
    pub max_read_calls: usize,
    /// Large records: 2 % of plain records carry up to 1 MiB (padding the
    /// simulated Kinesis counts without storing it), and a producer tick
    /// sometimes writes a burst of up to 10,000 records of up to 1 KiB to
    /// one shard, so GetRecords answers reach 10,000 records or 10 MiB.
    pub big_records: bool,
    /// Adversarial KPL: some aggregates hold hundreds of sub-records under
    /// one 256-byte partition key (a few KB on the wire, a hundred times
    /// that expanded).
    pub kpl_bombs: bool,
    /// Fault rates.
    pub faults: Faults,
    /// Scripted ops at true times (in addition to random faults).
    pub script: Vec<(Micros, Op)>,
    /// At most this many open shards (splits stop there).
    pub max_open_shards: usize,
    /// Whether the heal phase must catch up (off for cost runs).
    pub check_liveness: bool,
    /// Trace lines kept for a failure report.
    pub trace_tail: usize,
    /// Poison records: every user record whose id is `poison_every / 2`
    /// modulo `poison_every` is nacked by the sink at every delivery, and
    /// the workers dead-letter a batch after 3 deliveries (0: no poison,
    /// no `max_deliveries`).
    pub poison_every: u64,
    /// Probability that the dead-letter handler refuses an offer (nack).
    pub dead_letter_refuse: f64,
    /// Probability per producer tick of one misrouted KPL aggregate: built
    /// with the shard map from before the last split or merge (its
    /// sub-records' hash keys fall partly outside the shard it lands on),
    /// or put with an explicit hash key that routes it where its
    /// sub-records do not belong. Every consumer drops such sub-records
    /// (KCL's deaggregate filters them by the shard's hash range): they
    /// are excused from `no-loss`, every other one is not.
    pub kpl_stale: f64,
    /// Some EFO events hold only 1 to 3 Kinesis records although more are
    /// available (events come as records arrive, not as whole backlogs):
    /// a closed shard's event may then hold nothing but sub-records every
    /// consumer drops, and must not be taken for the shard's end.
    pub ragged_events: bool,
}

impl Params {
    /// Whether the user record `id` is poisoned (the sink always nacks it).
    pub fn poisoned(&self, id: u64) -> bool {
        self.poison_every != 0 && id % self.poison_every == self.poison_every / 2
    }

    /// Streams of the run (every application's).
    pub fn streams(&self) -> usize {
        self.apps.max(1) * self.streams_per_app.max(1)
    }

    /// A quiet run: `shards` x `workers`, polling, light producer, no faults.
    pub fn quiet(scenario: &str, seed: u64, shards: usize, workers: usize) -> Self {
        Params {
            scenario: scenario.to_owned(),
            seed,
            shards,
            workers,
            apps: 1,
            streams_per_app: 1,
            efo: false,
            pre_split: false,
            fault_us: 120 * SEC,
            heal_us: 300 * SEC,
            produce_every: 500 * MS,
            records_per_tick: 4,
            keys: 64,
            agg_prob: 0.2,
            retention: 24 * 3600 * SEC,
            efo_idle_event: SEC,
            efo_empty_first_event: false,
            empty_get_records: false,
            start_latest: false,
            start_at_us: None,
            batch_count: 10,
            checkpoint_limit: 1024,
            pool_records: 50_000,
            pool_bytes: 64 << 20,
            max_lease_writes: 64,
            max_read_calls: 64,
            big_records: false,
            kpl_bombs: false,
            faults: Faults::none(),
            script: Vec::new(),
            max_open_shards: shards * 2,
            check_liveness: true,
            trace_tail: crate::sched::TRACE_TAIL,
            poison_every: 0,
            dead_letter_refuse: 0.0,
            kpl_stale: 0.0,
            ragged_events: false,
        }
    }

    /// The swarm scenario: sizes, mode, knobs and fault rates from the seed.
    pub fn swarm(seed: u64) -> Self {
        let mut rng = Rng::new(seed ^ 0x5157_4152_4d00_0000);
        let shards = 1 + rng.below(12) as usize;
        let workers = 1 + rng.below(5) as usize;
        let mut p = Params::quiet("swarm", seed, shards, workers);
        p.efo = rng.chance(0.5);
        p.pre_split = rng.chance(0.2);
        p.fault_us = (3 + rng.below(10)) * 60 * SEC;
        p.records_per_tick = 1 + rng.below(12) as u32;
        p.agg_prob = if rng.chance(0.3) {
            0.0
        } else {
            rng.unit_f64() * 0.6
        };
        p.batch_count = [1, 5, 50, 500][rng.below(4) as usize];
        p.checkpoint_limit = [16, 64, 1024][rng.below(3) as usize];
        p.pool_records = [20, 300, 50_000][rng.below(3) as usize];
        p.faults = Faults::swarm(&mut rng);
        // Drawn last: the draws above (and so every earlier seed's
        // scenario) stay as they were.
        p.efo_empty_first_event = rng.chance(0.3);
        p.empty_get_records = rng.chance(0.3);
        p.start_latest = rng.chance(0.25);
        p.pool_bytes = [256 << 10, 4 << 20, 64 << 20][rng.below(3) as usize];
        p.faults.dynamo_blackhole = if rng.chance(0.5) {
            0.0
        } else {
            rng.unit_f64() * 0.02
        };
        p.big_records = rng.chance(0.25);
        if p.big_records {
            // Reads are sized by the largest recent record: a budget of a
            // few 1 MiB records reads one record at a time, slower than the
            // producer writes them.
            p.pool_bytes = 64 << 20;
        }
        p.kpl_bombs = rng.chance(0.25);
        if p.kpl_bombs {
            // An aggregate expands to up to 264 KB: a 256 KiB budget reads
            // one at a time.
            p.pool_bytes = p.pool_bytes.max(4 << 20);
        }
        if p.pool_records < 300 && p.agg_prob > 0.0 {
            // A 20-record budget reads KPL aggregates (up to tens of user
            // records each) one Kinesis record per GetRecords: slower
            // than the producer writes, so no fleet could catch up (seeds
            // 3326, 4928, 5917). Such a budget is drawn with plain records.
            p.pool_records = 300;
        }
        p.max_lease_writes = [1, 2, 64][rng.below(3) as usize];
        p.faults.efo_silent = if rng.chance(0.5) {
            0.0
        } else {
            rng.unit_f64() * 0.01
        };
        p.max_open_shards = shards * 2 + 2;
        // Drawn last, as above.
        p.kpl_stale = if rng.chance(0.7) {
            0.0
        } else {
            0.05 + rng.unit_f64() * 0.3
        };
        p.ragged_events = rng.chance(0.3);
        if p.kpl_stale > 0.0 {
            // Misrouted aggregates are aggregates: the budget rule above.
            p.pool_records = p.pool_records.max(300);
        }
        p.apps = if rng.chance(0.8) {
            1
        } else {
            2 + rng.below(2) as usize
        };
        p.streams_per_app = if rng.chance(0.8) { 1 } else { 2 };
        p.max_open_shards *= p.apps * p.streams_per_app;
        // Drawn last (earlier draws stay as they were): an AT_TIMESTAMP
        // start in the 10 s the producer runs before the fleet starts
        // (Kinesis refuses a timestamp in the future), then the fault
        // phase's splits and merges under load.
        if !p.start_latest && rng.chance(0.2) {
            p.start_at_us = Some(rng.below(10 * SEC));
        }
        // Streams deleted and recreated under the same name (15% of
        // seeds, up to 6 an hour), drawn after everything else so earlier
        // draws stay as they were. The oracles attribute a batch to the
        // shard it was read from (a chunk of a deleted shard, a
        // redelivery to its first delivery's shard) and re-anchor a shard
        // whose row an operator deleted.
        p.faults.recreate_stream = if rng.chance(0.85) {
            0.0
        } else {
            rng.unit_f64() * 6.0
        };
        // Drawn last, as above: the polling calls a worker has in flight
        // (the limit binds at a few shards in a third of the seeds).
        p.max_read_calls = [2, 4, 64][rng.below(3) as usize];
        p
    }

    /// A named scenario.
    pub fn named(name: &str, seed: u64) -> Option<Self> {
        let p = match name {
            "swarm" => Params::swarm(seed),
            "quiet" => Params::quiet("quiet", seed, 4, 2),
            "poison" => {
                // The swarm's faults with a sink that always nacks some
                // records: one record per batch (so a dead letter is
                // exactly its poisoned record) and no random nacks (only
                // poison is dead-lettered).
                let mut p = Params::swarm(seed);
                p.scenario = "poison".into();
                p.poison_every = 97;
                p.dead_letter_refuse = 0.3;
                p.batch_count = 1;
                p.faults.sink_nack = 0.0;
                p
            }
            "perf64" => {
                let mut p = Params::swarm(seed);
                p.scenario = "perf64".into();
                p.shards = 64;
                p.workers = 8;
                p.fault_us = 3600 * SEC;
                p.heal_us = 600 * SEC;
                p.max_open_shards = 80;
                p.records_per_tick = 16;
                p.produce_every = SEC;
                p
            }
            "cost100" | "cost1000" => {
                let shards = if name == "cost100" { 100 } else { 1000 };
                let mut p = Params::quiet(name, seed, shards, 10);
                p.efo = true;
                p.efo_idle_event = 5 * SEC;
                p.fault_us = 3600 * SEC;
                p.records_per_tick = 0;
                p.check_liveness = false;
                p.heal_us = 30 * SEC;
                p
            }
            _ => return None,
        };
        Some(p)
    }
}

/// Names accepted by `--scenario` (besides `cost`, which runs both cost ones).
pub const SCENARIOS: [&str; 6] = ["swarm", "quiet", "poison", "perf64", "cost100", "cost1000"];

/// What one run measured.
#[derive(Clone, Debug, Default)]
pub struct RunReport {
    /// Scenario.
    pub scenario: String,
    /// Seed.
    pub seed: u64,
    /// Simulated time.
    pub sim_us: Micros,
    /// Integral of open shards over time (shard-microseconds).
    pub shard_us: u128,
    /// DynamoDB accounting.
    pub counts: WriteCounts,
    /// SubscribeToShard calls that reached Kinesis.
    pub subscribe_calls: u64,
    /// User records written.
    pub records: u64,
    /// Duplicate deliveries.
    pub duplicates: u64,
    /// Checkpoint writes that did not move the checkpoint.
    pub idle_checkpoints: u64,
    /// SubscribeToShard calls refused (ResourceInUse or LimitExceeded)
    /// because of a call by another process or incarnation: the fleet-wide
    /// rule no worker can see (counted, not asserted).
    pub subscribe_refused_fleet: u64,
    /// ... because of the same worker incarnation's own earlier call.
    pub subscribe_refused_own: u64,
    /// Shard-microseconds of EFO runs (0 for polling).
    pub efo_shard_us: u128,
    /// Asserted failover times (`crash-with-survivor`: crash -> shard read
    /// by another worker; `crate::bounds`).
    pub failovers: Vec<Micros>,
    /// Other failover samples, by cause (measured, not asserted).
    pub failovers_other: Vec<(crate::bounds::Cause, Micros)>,
    /// Asserted join -> fair share times (joined with no fault active).
    pub convergence: Vec<Micros>,
    /// Other join -> fair share times (a fault was active).
    pub convergence_other: Vec<Micros>,
    /// Heal start -> caught up.
    pub heal: Option<Micros>,
    /// When the heal phase caught up (the fleet settled, just before it
    /// shuts down): the active leases and what each live worker held, in
    /// process order.
    pub settled: Option<(usize, Vec<usize>)>,
    /// Leases lost, by reason (`Taken`, `SelfFenced`, `HandedOff`, ...).
    pub lost: std::collections::BTreeMap<String, u64>,
    /// Lease rows still owned by a worker incarnation when it completed a
    /// graceful shutdown (summed over shutdowns).
    pub owned_after_shutdown: u64,
    /// Reads whose answer brought more than the pool room reserved for it
    /// (`crate::memory`; measured, not asserted).
    pub reads_over_reservation: u64,
    /// The most pool bytes held above the byte budget (only ever through
    /// such answers; asserted by the memory oracle).
    pub max_over_budget_bytes: u64,
    /// The largest peak above the byte budget while an answer was decoded
    /// (`crate::memory::decoding_bytes`; measured).
    pub max_decoding_over_budget_bytes: u64,
    /// DynamoDB requests black-holed until the call deadline
    /// (`crate::stuck`; measured).
    pub black_holed: u64,
    /// Of which heartbeat writes.
    pub black_holed_beats: u64,
    /// EFO subscriptions gone silent (the `stall` bound asserts their
    /// shards' progress).
    pub silenced: u64,
    /// Dead-letter offers (poison scenario), refused ones included.
    pub dead_letters: u64,
    /// User records written in misrouted KPL aggregates outside the hash
    /// range of the shard they landed on (`Params::kpl_stale`): dropped by
    /// every consumer, excused from `no-loss`.
    pub kpl_foreign: u64,
    /// EFO events of a closed shard, not its last, whose Kinesis records
    /// held only such sub-records (nothing a consumer keeps).
    pub foreign_only_events: u64,
    /// Streams deleted and recreated ([`Op::RecreateStream`]), and how
    /// many times the operator deleted their old rows after a worker's
    /// error.
    pub recreated: (u64, u64),
    /// Trace hash.
    pub trace_hash: u64,
    /// Trace lines.
    pub trace_lines: u64,
    /// The first violation, if any.
    pub violation: Option<Violation>,
    /// The last trace lines (on a violation).
    pub trace_tail: Vec<String>,
}

impl RunReport {
    /// Simulated shard-hours.
    pub fn shard_hours(&self) -> f64 {
        self.shard_us as f64 / (3600.0 * SEC as f64)
    }
}

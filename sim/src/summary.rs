//! The summary of a sweep: what the `kinesin-sim` binary prints per run.
//!
//! Models: aggregation of [`RunReport`]s into the figures SPEC.md and issue
//! 3 ask for: throughput of the simulator (seeds/s, simulated hours per wall
//! second), DynamoDB cost per shard-hour (liveness apart from checkpoints
//! and other lease writes, against KCL's ~1,090 renewals per shard-hour),
//! failover and rebalance times (asserted samples apart from the others,
//! see [`crate::bounds`]), SubscribeToShard calls per EFO shard-hour (polling
//! runs make none) with the refusals by cause, duplicates per million
//! records, and the memory oracle's figures (reads whose answer exceeded
//! the pool room reserved for it, the most held above the byte budget),
//! the DynamoDB requests black-holed for the stuck-request oracle and the
//! EFO subscriptions gone silent for the `stall` bound, and the KPL
//! sub-records of misrouted aggregates every consumer drops.
//!
//! Invariants: pure arithmetic over the reports; percentiles are
//! nearest-rank over every sample of every run.

use std::collections::BTreeMap;
use std::fmt;
use std::time::Duration;

use crate::dynamo::WriteCounts;
use crate::scenario::RunReport;
use crate::sched::{Micros, SEC};

/// KCL's lease renewals per shard-hour (one per lease every 3.3 s).
pub const KCL_RENEWALS_PER_SHARD_HOUR: f64 = 3600.0 / 3.3;

/// Aggregated figures over runs.
#[derive(Clone, Debug, Default)]
pub struct Summary {
    /// Runs.
    pub seeds: u64,
    /// Runs with a violation.
    pub violations: u64,
    /// Wall time.
    pub wall: Duration,
    /// Simulated time, all runs.
    pub sim_us: u128,
    /// Shard-microseconds, all runs.
    pub shard_us: u128,
    /// DynamoDB accounting, all runs.
    pub counts: WriteCounts,
    /// SubscribeToShard calls, all runs.
    pub subscribe_calls: u64,
    /// EFO shard-microseconds (the denominator of subscribe calls).
    pub efo_shard_us: u128,
    /// SubscribeToShard refusals caused by the caller's own earlier call.
    pub subscribe_refused_own: u64,
    /// ... by another process's call (fleet-wide rule).
    pub subscribe_refused_fleet: u64,
    /// Records written.
    pub records: u64,
    /// Duplicate deliveries.
    pub duplicates: u64,
    /// Asserted failover samples (`crash-with-survivor`).
    pub failovers: Vec<Micros>,
    /// Other failover samples, by cause.
    pub failovers_other: BTreeMap<&'static str, Vec<Micros>>,
    /// Asserted convergence samples (joins with no fault active).
    pub convergence: Vec<Micros>,
    /// Other convergence samples.
    pub convergence_other: Vec<Micros>,
    /// Heal samples.
    pub heals: Vec<Micros>,
    /// Reads whose answer exceeded its reservation, all runs.
    pub reads_over_reservation: u64,
    /// The most pool bytes held above the byte budget in any run.
    pub max_over_budget_bytes: u64,
    /// The largest peak above the byte budget while an answer was decoded,
    /// in any run.
    pub max_decoding_over_budget_bytes: u64,
    /// DynamoDB requests black-holed, all runs.
    pub black_holed: u64,
    /// Of which heartbeat writes.
    pub black_holed_beats: u64,
    /// EFO subscriptions gone silent, all runs.
    pub silenced: u64,
    /// KPL sub-records of misrouted aggregates outside their shard's range
    /// (dropped by every consumer), all runs.
    pub kpl_foreign: u64,
    /// Streams recreated, and operator clean-ups after a worker's error.
    pub recreated: (u64, u64),
}

fn pct(v: &mut [Micros], p: f64) -> Option<Micros> {
    if v.is_empty() {
        return None;
    }
    v.sort_unstable();
    let rank = ((p * v.len() as f64).ceil() as usize).clamp(1, v.len());
    Some(v[rank - 1])
}

fn secs(v: Option<Micros>) -> String {
    v.map(|us| format!("{:.1}s", us as f64 / SEC as f64))
        .unwrap_or_else(|| "-".into())
}

impl Summary {
    /// Add one run.
    pub fn add(&mut self, r: &RunReport) {
        self.seeds += 1;
        self.violations += u64::from(r.violation.is_some());
        self.sim_us += u128::from(r.sim_us);
        self.shard_us += r.shard_us;
        self.counts.add(&r.counts);
        self.subscribe_calls += r.subscribe_calls;
        self.efo_shard_us += r.efo_shard_us;
        self.subscribe_refused_own += r.subscribe_refused_own;
        self.subscribe_refused_fleet += r.subscribe_refused_fleet;
        self.records += r.records;
        self.duplicates += r.duplicates;
        self.reads_over_reservation += r.reads_over_reservation;
        self.max_over_budget_bytes = self.max_over_budget_bytes.max(r.max_over_budget_bytes);
        self.max_decoding_over_budget_bytes = self
            .max_decoding_over_budget_bytes
            .max(r.max_decoding_over_budget_bytes);
        self.black_holed += r.black_holed;
        self.black_holed_beats += r.black_holed_beats;
        self.silenced += r.silenced;
        self.kpl_foreign += r.kpl_foreign;
        self.recreated.0 += r.recreated.0;
        self.recreated.1 += r.recreated.1;
        self.failovers.extend(&r.failovers);
        for &(cause, us) in &r.failovers_other {
            self.failovers_other
                .entry(cause.name())
                .or_default()
                .push(us);
        }
        self.convergence.extend(&r.convergence);
        self.convergence_other.extend(&r.convergence_other);
        self.heals.extend(r.heal);
    }

    /// Shard-hours simulated.
    pub fn shard_hours(&self) -> f64 {
        self.shard_us as f64 / (3600.0 * SEC as f64)
    }

    /// Liveness (heartbeat) writes per shard-hour.
    pub fn liveness_per_shard_hour(&self) -> f64 {
        self.counts.heartbeat as f64 / self.shard_hours().max(1e-9)
    }

    /// Failover p50, p99, max.
    pub fn failover(&self) -> (Option<Micros>, Option<Micros>, Option<Micros>) {
        let mut v = self.failovers.clone();
        (pct(&mut v, 0.5), pct(&mut v, 0.99), pct(&mut v, 1.0))
    }

    /// Convergence p50, max.
    pub fn convergence(&self) -> (Option<Micros>, Option<Micros>) {
        let mut v = self.convergence.clone();
        (pct(&mut v, 0.5), pct(&mut v, 1.0))
    }
}

impl fmt::Display for Summary {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let wall = self.wall.as_secs_f64().max(1e-9);
        let sh = self.shard_hours().max(1e-9);
        let live = self.liveness_per_shard_hour();
        let (f50, f99, fmax) = self.failover();
        let (c50, cmax) = self.convergence();
        let mut heals = self.heals.clone();
        let efo_sh = self.efo_shard_us as f64 / (3600.0 * SEC as f64);
        let others: Vec<String> = self
            .failovers_other
            .iter()
            .map(|(cause, v)| {
                let mut v = v.clone();
                format!(
                    "{cause} p50={} max={} n={}",
                    secs(pct(&mut v, 0.5)),
                    secs(pct(&mut v, 1.0)),
                    v.len()
                )
            })
            .collect();
        let mut conv_other = self.convergence_other.clone();
        write!(
            f,
            "seeds={} violations={} seeds/s={:.1} sim-h/s={:.1} | dynamo/shard-h: liveness={:.1} (KCL/{:.0}) checkpoint={:.1} other={:.1} failed-cond={:.1} | failover (asserted, crash-with-survivor) p50={} p99={} max={} (n={}) | failover other: {} | rebalance (asserted, fault-free joins) p50={} max={} (n={}) other max={} (n={}) | heal max={} | subscribe/efo-shard-h={:.2} refused own={} fleet={} | dup/M={:.0} | memory: reads over reservation={} max over budget={} KiB (while decoding {} KiB) | stuck: black-holed dynamo requests={} (heartbeat writes={}) | efo subscriptions gone silent={} | kpl sub-records outside their shard (dropped)={} | streams recreated={} (old rows deleted after a worker's error: {})",
            self.seeds,
            self.violations,
            self.seeds as f64 / wall,
            self.sim_us as f64 / (3600.0 * SEC as f64) / wall,
            live,
            KCL_RENEWALS_PER_SHARD_HOUR / live.max(1e-9),
            self.counts.checkpoint as f64 / sh,
            (self.counts.lease_writes() - self.counts.checkpoint) as f64 / sh,
            self.counts.conditional_failed as f64 / sh,
            secs(f50),
            secs(f99),
            secs(fmax),
            self.failovers.len(),
            if others.is_empty() {
                "-".to_owned()
            } else {
                others.join(", ")
            },
            secs(c50),
            secs(cmax),
            self.convergence.len(),
            secs(pct(&mut conv_other, 1.0)),
            self.convergence_other.len(),
            secs(pct(&mut heals, 1.0)),
            self.subscribe_calls as f64 / efo_sh.max(1e-9),
            self.subscribe_refused_own,
            self.subscribe_refused_fleet,
            self.duplicates as f64 * 1e6 / (self.records.max(1)) as f64,
            self.reads_over_reservation,
            self.max_over_budget_bytes.div_ceil(1024),
            self.max_decoding_over_budget_bytes.div_ceil(1024),
            self.black_holed,
            self.black_holed_beats,
            self.silenced,
            self.kpl_foreign,
            self.recreated.0,
            self.recreated.1,
        )
    }
}

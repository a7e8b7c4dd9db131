//! # kinesin-sim: a deterministic world that proves the core under faults
//!
//! Drives several real [`kinesin_core::worker::Worker`]s against a simulated
//! Kinesis ([`kinesis`]) and a simulated DynamoDB lease table ([`dynamo`]) on
//! one logical timeline ([`sched`]), injects faults (crashes, restarts,
//! zombies, partitions, lost responses, throttling, clock drift, resharding,
//! stalled and nacking sinks), and checks every "must" of SPEC.md after
//! every step ([`oracle`]). One `u64` seed derives everything; fault rates
//! are drawn per seed (swarm testing, [`scenario`]); a fault phase is
//! followed by a heal phase that must reach full progress within a bound.
//! The same seed gives the same trace hash. The `poison` scenario adds a
//! sink that always nacks some records and a dead-letter handler (the
//! `dead-letter` oracle: dead letters are exactly the poisoned records, after
//! exactly `max_deliveries` deliveries, and every one is acknowledged
//! through the handler by the end of the heal phase).
//!
//! The modules, and who may import whom:
//!
//! - [`sched`]: time, the event queue, clocks, the trace; imports nothing
//!   of the crate.
//! - [`kinesis`], [`dynamo`]: the services' rules, as plain state; import
//!   only `sched`.
//! - [`net`]: the fault injector between processes and services (partitions,
//!   latency, throttling, errors, lost responses), a value the world asks
//!   about each message; imports `scenario` and `sched` only.
//! - [`stuck`]: the stuck-request oracle (one black-holed DynamoDB
//!   request never fences a worker); imports `sched` and `net`'s deadline.
//! - [`memory`]: the memory oracle (reads reserved, pool usage within the
//!   budgets); imports only `kinesin_core`.
//! - [`oracle`]: the invariants; [`bounds`]: the timed bounds (failover,
//!   join, stall, fencing order) with samples tagged by cause;
//!   [`scenario`]: parameters, ops, reports;
//!   [`summary`]: a sweep's figures.
//! - `trace_fmt` (private): the trace text of the world's lines.
//! - [`world`] and `fleet` (private, `impl World`): the composition root:
//!   the event loop and runtimes, and the processes' lifecycle and the
//!   run's phases.
//!
//! Entry point: [`run`] (or [`world::World`]); the `kinesin-sim` binary
//! sweeps seeds and prints a summary; `cargo test -p kinesin-sim` runs the
//! fixed-seed scenarios and the proptest suite.
#![forbid(unsafe_code)]
#![warn(missing_docs)]

pub mod bounds;
pub mod dynamo;
mod fleet;
pub mod kinesis;
pub mod memory;
pub mod net;
pub mod oracle;
pub mod scenario;
pub mod sched;
pub mod stuck;
pub mod summary;
mod trace_fmt;
pub mod world;

pub use oracle::Violation;
pub use scenario::{Faults, Op, Params, RunReport};

/// Run one world to the end and report what it measured (and the first
/// violation, if any).
pub fn run(params: Params) -> RunReport {
    world::World::new(params).run()
}

/// The command that replays a run.
pub fn replay_command(report: &RunReport) -> String {
    if Params::named(&report.scenario, report.seed).is_some() {
        format!(
            "cargo run -p kinesin-sim --release -- --scenario {} --seed {}",
            report.scenario, report.seed
        )
    } else {
        format!(
            "cargo test -p kinesin-sim (scenario {:?}, seed {}: a test builds its Params)",
            report.scenario, report.seed
        )
    }
}

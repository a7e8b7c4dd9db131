//! # kinesin-core: the deterministic heart of the kinesin Kinesis consumer
//!
//! This crate decides everything a Kinesis Data Streams consumer decides, and
//! does nothing else: no networking, no clock, no threads, no async, no OS
//! randomness. It is a set of Sans-IO state machines in the style of
//! `quinn-proto` and `str0m`. A runtime (`kinesin-aws` on tokio or async-std,
//! or the simulator in `kinesin-sim`) feeds it inputs and executes its outputs.
//!
//! Time comes in as `now: Instant` on every call (monotonic; it must not go
//! backwards) and, only where AWS needs a wall clock, as `unix_ms`. All
//! randomness (backoff jitter) comes from a seed in [`Config`]. Iteration
//! order is deterministic (`BTreeMap`). The same seed and the same inputs give
//! the same outputs, byte for byte.
//!
//! Types to read first:
//! - [`Worker`]: one per process; composes every machine below.
//! - [`Action`] (I/O for the runtime), [`Input`] (its results),
//!   [`Event`] (for the application).
//! - [`Config`]: every knob, validated, with the Bento field names.
//! - [`health::Health`]: whether calls have been refused (credentials,
//!   access, KMS) for longer than `unhealthy_after`.
//!
//! ## The run loop
//!
//! After every `handle_*` call and every command (`ack`, `nack`,
//! `shutdown`), drain `poll_action()` and `poll_event()` until both return
//! `None`, then sleep until `poll_timeout()` (or the next input) and call
//! `handle_timeout(now)`. Nothing happens between calls.
#![forbid(unsafe_code)]
#![warn(missing_docs)]

pub mod backoff;
pub mod checkpoint;
pub mod config;
pub mod health;
pub mod ids;
pub mod io;
pub mod kpl;
pub(crate) mod lease;
pub mod pool;
pub(crate) mod registration;
pub mod rng;
pub mod sequence;
pub(crate) mod shard;
pub mod table;
pub mod timer;
pub mod worker;

pub use config::Config;
pub use io::{Action, Event, Input};
pub use lease::{LeaseStats, LeaseView};
pub use worker::Worker;

/// Logical time for unit tests: the one place the crate reads the OS clock,
/// to get an arbitrary epoch that tests then advance by hand. Never compiled
/// outside `cfg(test)`.
#[cfg(test)]
pub(crate) fn test_epoch() -> std::time::Instant {
    std::time::Instant::now()
}

//! End-to-end tests of kinesin against the local emulators
//! (`scripts/emulators.sh`).
//!
//! - [`fault_proxy`]: the one piece of library code, a TCP proxy that
//!   freezes, delays or refuses connections between a consumer and the
//!   emulators (used by the conformance suite's fault scenarios).
//! - `tests/conformance/mod.rs`: the conformance suite, every scenario
//!   written once and run on each runtime: `tests/conformance_tokio.rs`
//!   (kinesin-tokio) and `tests/conformance_async_std.rs`
//!   (kinesin-async-std under `async_std::task::block_on`, no tokio runtime
//!   in the process).
//! - `examples/efo_cpu.rs`: CPU seconds per million records of the same
//!   Enhanced Fan-Out run on either runtime
//!   (`cargo run -p kinesin-tests --release --example efo_cpu -- --runtime tokio|async-std`).

pub mod fault_proxy;

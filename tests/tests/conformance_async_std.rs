//! The conformance suite (`conformance/mod.rs`) on kinesin-async-std,
//! with no tokio runtime in this process: each test runs under
//! `async_std::task::block_on`, on the crate's own HTTP client and sleep,
//! and checks at its start and end that no tokio runtime is reachable
//! (from the test's thread and from a task spawned through the kinesin
//! runtime) and that no tokio thread exists in the process. Any accidental
//! use of tokio (a timer, a spawn, TCP) panics with "there is no reactor
//! running" and fails the test.
//!
//! The smoke test under `smol::block_on` is in kinesin-async-std
//! (`runtime-async-std/tests/smol_smoke.rs`).

mod common;
mod conformance;

conformance::conformance_suite!(common::AsyncStd);

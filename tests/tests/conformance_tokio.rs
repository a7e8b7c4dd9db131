//! The conformance suite (`conformance/mod.rs`) on kinesin-tokio: each
//! test in its own 2-worker multi-thread tokio runtime, the SDK's default
//! HTTP client (hyper on tokio, rustls with aws-lc for TLS).

mod common;
mod conformance;

conformance::conformance_suite!(common::Tokio);

/// The async-std binary's process-wide check (no thread named like
/// tokio's) would see a tokio runtime: it does here.
#[test]
fn tokio_threads_are_visible_to_the_isolation_check() {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .build()
        .expect("a tokio runtime");
    // A task run on a worker: the worker thread started (and named itself).
    runtime
        .block_on(runtime.spawn(async {}))
        .expect("the task ran");
    let threads = common::tokio_threads();
    assert!(!threads.is_empty(), "no tokio thread found");
}

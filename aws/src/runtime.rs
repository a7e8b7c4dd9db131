//! The executor seam: what the driver needs from an async runtime.
//!
//! Models: quinn's `Runtime` trait. The [`crate::Driver`] is plain `async`
//! code; it needs exactly three things from an executor: run a task in the
//! background ([`Runtime::spawn`]), wake up at an instant
//! ([`Runtime::new_timer`], one reusable [`AsyncTimer`]), and read the
//! monotonic clock ([`Runtime::now`]). A runtime crate (`kinesin-tokio`,
//! later `kinesin-async-std`) implements this in a few lines; nothing in
//! this crate names an executor's types.
//!
//! Invariants: `now()` never goes backwards; a timer whose deadline is in the
//! past is ready at once; resetting a timer replaces its deadline (no second
//! wake-up for the old one is required).

use std::fmt::Debug;
use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Instant;

/// A boxed `Send` future with no output: what [`Runtime::spawn`] runs.
pub type Task = Pin<Box<dyn Future<Output = ()> + Send + 'static>>;

/// An executor the driver can run on. See the module doc.
pub trait Runtime: Send + Sync + Debug + 'static {
    /// Run `task` in the background, detached: the driver never joins it
    /// (every task reports back on a channel or ends when its channel
    /// closes).
    fn spawn(&self, task: Task);

    /// A timer that becomes ready at `deadline`; [`AsyncTimer::reset`]
    /// moves it.
    fn new_timer(&self, deadline: Instant) -> Pin<Box<dyn AsyncTimer>>;

    /// The monotonic clock the timers use.
    fn now(&self) -> Instant;
}

/// A reusable timer: ready once its deadline passed, movable with
/// [`AsyncTimer::reset`].
pub trait AsyncTimer: Send + Debug + 'static {
    /// Move the deadline (earlier or later).
    fn reset(self: Pin<&mut Self>, deadline: Instant);

    /// Ready once the deadline passed.
    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()>;
}

/// Wait until `deadline` on `runtime`'s clock (a fresh timer; for one-off
/// waits outside the driver's loop).
pub async fn sleep_until(runtime: &dyn Runtime, deadline: Instant) {
    let mut timer = runtime.new_timer(deadline);
    std::future::poll_fn(|cx| timer.as_mut().poll(cx)).await
}

/// Run `future` with a deadline: `None` when `deadline` passed first (the
/// future is dropped).
pub async fn with_deadline<F: Future>(
    runtime: &dyn Runtime,
    deadline: Instant,
    future: F,
) -> Option<F::Output> {
    let mut timer = runtime.new_timer(deadline);
    let mut future = std::pin::pin!(future);
    std::future::poll_fn(|cx| {
        if let Poll::Ready(out) = future.as_mut().poll(cx) {
            return Poll::Ready(Some(out));
        }
        timer.as_mut().poll(cx).map(|()| None)
    })
    .await
}

/// A runtime that runs nothing, for unit tests that drive the driver's
/// event handling directly or never get as far as starting it: spawned
/// tasks are dropped, timers never fire, the clock is `Instant::now`.
#[cfg(test)]
#[derive(Debug, Default)]
pub(crate) struct IdleRuntime;

#[cfg(test)]
#[derive(Debug)]
struct NeverTimer;

#[cfg(test)]
impl AsyncTimer for NeverTimer {
    fn reset(self: Pin<&mut Self>, _: Instant) {}
    fn poll(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<()> {
        Poll::Pending
    }
}

#[cfg(test)]
impl Runtime for IdleRuntime {
    fn spawn(&self, _: Task) {}
    fn new_timer(&self, _: Instant) -> Pin<Box<dyn AsyncTimer>> {
        Box::pin(NeverTimer)
    }
    fn now(&self) -> Instant {
        Instant::now()
    }
}

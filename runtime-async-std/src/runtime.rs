//! The executor seam on async-std: [`AsyncStdRuntime`] for the driver and
//! [`AsyncIoSleep`] for the AWS SDK.
//!
//! Tasks are async-std tasks (async-global-executor underneath); timers
//! are async-io timers; the clock is [`Instant::now`], the clock async-io
//! timers use. Under `smol::block_on` the same code runs unchanged: async-io
//! has one reactor per process whichever executor polls the futures.
//!
//! Invariants (from [`kinesin_aws::Runtime`]): `now()` never goes
//! backwards; a timer whose deadline passed is ready, and stays ready until
//! reset, however often it is polled.

use std::fmt;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use aws_smithy_async::rt::sleep::{AsyncSleep, Sleep};
use kinesin_aws::{AsyncTimer, Runtime, Task};

/// The driver's [`Runtime`] on async-std tasks and async-io timers.
#[derive(Debug, Clone, Copy, Default)]
pub struct AsyncStdRuntime;

impl Runtime for AsyncStdRuntime {
    fn spawn(&self, task: Task) {
        // Detached: dropping the JoinHandle does not cancel an async-std task.
        drop(async_std::task::spawn(task));
    }

    fn new_timer(&self, deadline: Instant) -> Pin<Box<dyn AsyncTimer>> {
        Box::pin(IoTimer {
            deadline,
            timer: async_io::Timer::at(deadline),
        })
    }

    fn now(&self) -> Instant {
        Instant::now()
    }
}

/// An async-io timer with its deadline kept beside it: async-io's timer
/// fires once (it returns `Pending` when polled again after firing), the
/// [`AsyncTimer`] contract wants it ready until reset.
struct IoTimer {
    deadline: Instant,
    timer: async_io::Timer,
}

impl fmt::Debug for IoTimer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("IoTimer")
            .field("deadline", &self.deadline)
            .finish_non_exhaustive()
    }
}

impl AsyncTimer for IoTimer {
    fn reset(mut self: Pin<&mut Self>, deadline: Instant) {
        self.deadline = deadline;
        self.timer.set_at(deadline);
    }

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        if Instant::now() >= self.deadline {
            return Poll::Ready(());
        }
        std::future::Future::poll(Pin::new(&mut self.timer), cx).map(|_| ())
    }
}

/// The AWS SDK's sleep (retry back-off, timeouts, credential caching) on
/// async-io timers.
#[derive(Debug, Clone, Copy, Default)]
pub struct AsyncIoSleep;

impl AsyncSleep for AsyncIoSleep {
    fn sleep(&self, duration: Duration) -> Sleep {
        Sleep::new(async move {
            async_io::Timer::after(duration).await;
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timer_stays_ready_after_deadline_until_reset() {
        async_std::task::block_on(async {
            let runtime = AsyncStdRuntime;
            let start = runtime.now();
            let mut timer = runtime.new_timer(start + Duration::from_millis(20));
            std::future::poll_fn(|cx| timer.as_mut().poll(cx)).await;
            assert!(runtime.now() >= start + Duration::from_millis(20));
            // Polled again without reset: still ready.
            std::future::poll_fn(|cx| timer.as_mut().poll(cx)).await;
            // Reset into the future: pending until then.
            let later = runtime.now() + Duration::from_millis(30);
            timer.as_mut().reset(later);
            let polled =
                futures_lite::future::poll_once(std::future::poll_fn(|cx| timer.as_mut().poll(cx)))
                    .await;
            assert!(polled.is_none(), "a timer reset into the future is pending");
            std::future::poll_fn(|cx| timer.as_mut().poll(cx)).await;
            assert!(runtime.now() >= later);
        });
    }

    #[test]
    fn timer_reset_earlier_fires_at_the_new_deadline() {
        async_std::task::block_on(async {
            let runtime = AsyncStdRuntime;
            let start = runtime.now();
            let mut timer = runtime.new_timer(start + Duration::from_secs(3600));
            timer.as_mut().reset(start + Duration::from_millis(10));
            std::future::poll_fn(|cx| timer.as_mut().poll(cx)).await;
            assert!(runtime.now() < start + Duration::from_secs(60));
        });
    }

    #[test]
    fn spawned_task_runs_detached() {
        async_std::task::block_on(async {
            let (tx, rx) = async_std::channel::bounded(1);
            AsyncStdRuntime.spawn(Box::pin(async move {
                AsyncIoSleep.sleep(Duration::from_millis(5)).await;
                tx.send(()).await.expect("receiver alive");
            }));
            rx.recv().await.expect("task ran");
        });
    }
}

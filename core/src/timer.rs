//! The worker's own timers: one enum variant per purpose, one fixed slot per
//! variant (as quinn-proto's `connection/timer.rs`).
//!
//! Models: deadlines of the worker-level duties (commit period, shard
//! discovery, shutdown deadline). The sub-machines (lease manager, readers,
//! registrations) keep their own deadlines and report them through their
//! `poll_timeout`; the worker takes the earliest of all.
//!
//! Invariants: each timer fires at most once per arming
//! ([`TimerTable::expire`] disarms it); an unarmed timer never fires; the
//! earliest deadline is reported together with its reason.

use std::time::Instant;

/// Worker-level timers.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Timer {
    /// Write checkpoints that progressed (every `commit_period`).
    Commit = 0,
    /// ListShards for every stream (every `shard_sync_period`).
    ShardSync = 1,
    /// Give up waiting for in-flight acks at shutdown.
    ShutdownDeadline = 2,
}

impl Timer {
    /// Every timer, in slot order.
    pub const ALL: [Timer; 3] = [Timer::Commit, Timer::ShardSync, Timer::ShutdownDeadline];

    /// Why the worker wakes up for it (shown by `poll_timeout`).
    pub fn reason(self) -> &'static str {
        match self {
            Timer::Commit => "commit checkpoints",
            Timer::ShardSync => "list shards",
            Timer::ShutdownDeadline => "shutdown deadline",
        }
    }
}

/// A fixed table of deadlines indexed by [`Timer`].
#[derive(Clone, Debug, Default)]
pub struct TimerTable {
    slots: [Option<Instant>; 3],
}

impl TimerTable {
    /// Arm (or re-arm) a timer.
    pub fn set(&mut self, timer: Timer, at: Instant) {
        self.slots[timer as usize] = Some(at);
    }
    /// Disarm a timer.
    pub fn stop(&mut self, timer: Timer) {
        self.slots[timer as usize] = None;
    }
    /// The deadline of a timer, if armed.
    pub fn get(&self, timer: Timer) -> Option<Instant> {
        self.slots[timer as usize]
    }
    /// Disarm and return every timer due at `now`, in slot order.
    pub fn expire(&mut self, now: Instant) -> impl Iterator<Item = Timer> {
        let mut fired = [None; 3];
        for t in Timer::ALL {
            if self.get(t).is_some_and(|at| at <= now) {
                self.stop(t);
                fired[t as usize] = Some(t);
            }
        }
        fired.into_iter().flatten()
    }
    /// The earliest armed deadline and its reason.
    pub fn next(&self) -> Option<(Instant, &'static str)> {
        Timer::ALL
            .iter()
            .filter_map(|&t| self.get(t).map(|at| (at, t.reason())))
            .min_by_key(|(at, _)| *at)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn timer_fires_once_per_arming() {
        let t0 = crate::test_epoch();
        let mut tt = TimerTable::default();
        tt.set(Timer::Commit, t0 + Duration::from_secs(5));
        assert_eq!(tt.expire(t0).count(), 0);
        let fired: Vec<_> = tt.expire(t0 + Duration::from_secs(5)).collect();
        assert_eq!(fired, vec![Timer::Commit]);
        assert_eq!(tt.expire(t0 + Duration::from_secs(6)).count(), 0);
    }

    #[test]
    fn next_reports_earliest_with_reason() {
        let t0 = crate::test_epoch();
        let mut tt = TimerTable::default();
        assert_eq!(tt.next(), None);
        tt.set(Timer::ShardSync, t0 + Duration::from_secs(60));
        tt.set(Timer::Commit, t0 + Duration::from_secs(5));
        assert_eq!(
            tt.next(),
            Some((t0 + Duration::from_secs(5), "commit checkpoints"))
        );
        tt.stop(Timer::Commit);
        assert_eq!(tt.next().map(|(_, r)| r), Some("list shards"));
    }
}

//! The seam between the driver and the `metrics` facade crate (feature
//! `metrics`, on by default): the driver's counters and gauges go through
//! these handles, so an application's recorder (Prometheus, StatsD, ...)
//! sees them when the feature is on, and nothing is linked when it is off.
//!
//! kinesin's own registry ([`crate::Metrics`]: per-shard series, health,
//! Prometheus text) does not go through here: it is in every build.
//!
//! Invariants: the two implementations have the same API; the no-op one
//! is compiled in every build (its test runs with the feature on too) and
//! `cfg(feature = "metrics")` only selects which one the driver uses; the
//! no-op one does nothing and holds nothing.

/// Handles that do nothing (the build without the `metrics` feature).
#[cfg_attr(feature = "metrics", allow(dead_code))]
pub(crate) mod noop {
    /// A counter that counts nothing.
    #[derive(Clone, Debug, Default)]
    pub struct Counter;
    impl Counter {
        pub fn increment(&self, _by: u64) {}
    }
    /// A gauge that records nothing.
    #[derive(Clone, Debug, Default)]
    pub struct Gauge;
    impl Gauge {
        pub fn set(&self, _value: f64) {}
    }
    pub fn counter(_name: &'static str) -> Counter {
        Counter
    }
    pub fn gauge(_name: &'static str) -> Gauge {
        Gauge
    }
    pub fn shard_gauge(_name: &'static str, _stream: &str, _shard: &str) -> Gauge {
        Gauge
    }
}

/// Handles of the installed `metrics` recorder.
#[cfg(feature = "metrics")]
pub(crate) mod recorder {
    pub use metrics::{Counter, Gauge};
    pub fn counter(name: &'static str) -> Counter {
        metrics::counter!(name)
    }
    pub fn gauge(name: &'static str) -> Gauge {
        metrics::gauge!(name)
    }
    /// A gauge labelled with a shard (`stream`, `shard`).
    pub fn shard_gauge(name: &'static str, stream: &str, shard: &str) -> Gauge {
        metrics::gauge!(name, "stream" => stream.to_owned(), "shard" => shard.to_owned())
    }
}

#[cfg(not(feature = "metrics"))]
pub(crate) use noop::*;
#[cfg(feature = "metrics")]
pub(crate) use recorder::*;

#[cfg(test)]
mod tests {
    #[test]
    fn the_noop_handles_take_every_call_and_hold_nothing() {
        use super::noop;
        assert_eq!(std::mem::size_of::<noop::Counter>(), 0);
        assert_eq!(std::mem::size_of::<noop::Gauge>(), 0);
        noop::counter("kinesin_x_total").increment(3);
        noop::gauge("kinesin_x").set(1.0);
        noop::shard_gauge("kinesin_y", "s", "shardId-000000000000").set(2.0);
    }

    #[cfg(feature = "metrics")]
    #[test]
    fn the_facade_handles_reach_an_installed_recorder() {
        use std::sync::atomic::{AtomicU64, Ordering};
        use std::sync::Arc;

        #[derive(Default)]
        struct Seen(Arc<AtomicU64>);
        impl metrics::CounterFn for Seen {
            fn increment(&self, by: u64) {
                self.0.fetch_add(by, Ordering::Relaxed);
            }
            fn absolute(&self, v: u64) {
                self.0.store(v, Ordering::Relaxed);
            }
        }
        struct Rec(Arc<AtomicU64>);
        impl metrics::Recorder for Rec {
            fn describe_counter(
                &self,
                _: metrics::KeyName,
                _: Option<metrics::Unit>,
                _: metrics::SharedString,
            ) {
            }
            fn describe_gauge(
                &self,
                _: metrics::KeyName,
                _: Option<metrics::Unit>,
                _: metrics::SharedString,
            ) {
            }
            fn describe_histogram(
                &self,
                _: metrics::KeyName,
                _: Option<metrics::Unit>,
                _: metrics::SharedString,
            ) {
            }
            fn register_counter(
                &self,
                _: &metrics::Key,
                _: &metrics::Metadata<'_>,
            ) -> metrics::Counter {
                metrics::Counter::from_arc(Arc::new(Seen(self.0.clone())))
            }
            fn register_gauge(
                &self,
                _: &metrics::Key,
                _: &metrics::Metadata<'_>,
            ) -> metrics::Gauge {
                metrics::Gauge::noop()
            }
            fn register_histogram(
                &self,
                _: &metrics::Key,
                _: &metrics::Metadata<'_>,
            ) -> metrics::Histogram {
                metrics::Histogram::noop()
            }
        }
        let seen = Arc::new(AtomicU64::new(0));
        metrics::with_local_recorder(&Rec(seen.clone()), || {
            super::counter("kinesin_x_total").increment(5);
        });
        assert_eq!(seen.load(Ordering::Relaxed), 5);
    }
}

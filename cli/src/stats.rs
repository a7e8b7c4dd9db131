//! The driver's metrics (the `metrics` facade) read back in-process: leases
//! held, lease-table writes and the pool's use, for the progress line, the
//! progress log and the exit summary.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};

use metrics::{Counter, Gauge, Histogram, Key, KeyName, Metadata, Recorder, SharedString, Unit};

/// Values read from the driver's metrics.
#[derive(Debug, Default)]
pub struct Stats {
    leases_held: Arc<AtomicU64>,
    lease_writes: Arc<AtomicU64>,
    pool_records: Arc<AtomicU64>,
    pool_bytes: Arc<AtomicU64>,
}

impl Stats {
    /// Leases this process holds now.
    pub fn leases_held(&self) -> u64 {
        f64::from_bits(self.leases_held.load(Ordering::Relaxed)) as u64
    }
    /// Lease and heartbeat writes sent (DynamoDB or local store).
    pub fn lease_writes(&self) -> u64 {
        self.lease_writes.load(Ordering::Relaxed)
    }
    /// Received and not yet acknowledged: (records, bytes).
    pub fn pool(&self) -> (u64, u64) {
        let get = |a: &AtomicU64| f64::from_bits(a.load(Ordering::Relaxed)) as u64;
        (get(&self.pool_records), get(&self.pool_bytes))
    }
}

struct StatsRecorder(&'static Stats);

impl Recorder for StatsRecorder {
    fn describe_counter(&self, _: KeyName, _: Option<Unit>, _: SharedString) {}
    fn describe_gauge(&self, _: KeyName, _: Option<Unit>, _: SharedString) {}
    fn describe_histogram(&self, _: KeyName, _: Option<Unit>, _: SharedString) {}

    fn register_counter(&self, key: &Key, _: &Metadata<'_>) -> Counter {
        match key.name() {
            "kinesin_lease_writes_total" => Counter::from_arc(self.0.lease_writes.clone()),
            _ => Counter::noop(),
        }
    }

    fn register_gauge(&self, key: &Key, _: &Metadata<'_>) -> Gauge {
        match key.name() {
            "kinesin_leases_held" => Gauge::from_arc(self.0.leases_held.clone()),
            "kinesin_pool_records" => Gauge::from_arc(self.0.pool_records.clone()),
            "kinesin_pool_bytes" => Gauge::from_arc(self.0.pool_bytes.clone()),
            _ => Gauge::noop(),
        }
    }

    fn register_histogram(&self, _: &Key, _: &Metadata<'_>) -> Histogram {
        Histogram::noop()
    }
}

/// Install the recorder once; returns the shared values.
pub fn install() -> &'static Stats {
    static STATS: OnceLock<&'static Stats> = OnceLock::new();
    STATS.get_or_init(|| {
        let stats: &'static Stats = Box::leak(Box::default());
        let _ = metrics::set_global_recorder(StatsRecorder(stats));
        stats
    })
}

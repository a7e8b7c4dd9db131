//! The driver's own metrics registry: what an operator scrapes to know
//! whether every shard is read, how far behind each is, and what failed.
//!
//! Models: per-shard series (labels `stream`, `shard`) that exist exactly
//! while this worker holds the shard's lease — registered once at lease
//! gain, removed at lease loss, so a hand-off makes the series disappear
//! from this worker's scrape instead of freezing at its last value — and
//! per-worker counters and gauges. The `metrics` facade cannot remove a
//! series, which is why the registry is kinesin's own; [`Metrics::render`]
//! writes the Prometheus text exposition format (version 0.0.4), and
//! [`Metrics::health`] answers a readiness probe.
//!
//! Cost on the hot path: a delivery updates a few relaxed atomics of the
//! shard's handle, which the driver looks up once per chunk (not per
//! batch), and the batch carries the handle and its delivery time to its
//! ack (no map insert or lookup per batch); counters by API and error class are a fixed array
//! of atomics (no allocation, no label formatting until a scrape).
//!
//! Ages and latencies: a shard's checkpoint age counts from its last
//! successful checkpoint write (from the lease gain before the first), the
//! heartbeat age from the last successful heartbeat write; call latency
//! (from the call's spawn to its answer, by API) and batch ack latency
//! (from a batch's delivery to its ack) are histograms with fixed buckets.
//!
//! Health rule (for `/healthz`): failing with a reason when the worker got
//! a fatal event (e.g. superseded by a later incarnation of its id), when
//! the core reports it failing non-transiently (every call to Kinesis or
//! DynamoDB refused for `unhealthy_after`: credentials, access, KMS; until
//! the core reports it healthy again), when no lease-table read has
//! succeeded for longer than the failover time (the root cause named
//! first), or when it fenced itself and holds no lease since; otherwise
//! ready once a lease-table read succeeded (the core takes what it may
//! right after a read, so from then on the worker holds leases or none was
//! left for it); starting before its first lease-table read.

use std::collections::{BTreeMap, HashMap};
use std::fmt::Write as _;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use kinesin_core::ids::{OpId, ShardRef};
use kinesin_core::io::{ErrorClass, Input, LostReason};
use kinesin_core::table::LeaseWrite;

/// Upper bounds of the latency histograms' buckets (seconds); `+Inf` is
/// implied.
pub const BUCKETS: [f64; 12] = [
    0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
];

/// A latency histogram: counts per bucket (not cumulative; rendered
/// cumulative), the sum in microseconds and the count.
#[derive(Debug, Default)]
struct Histogram {
    buckets: [AtomicU64; 12],
    sum_micros: AtomicU64,
    count: AtomicU64,
}

impl Histogram {
    fn observe(&self, d: Duration) {
        let secs = d.as_secs_f64();
        if let Some(i) = BUCKETS.iter().position(|b| secs <= *b) {
            self.buckets[i].fetch_add(1, Ordering::Relaxed);
        }
        self.sum_micros
            .fetch_add(d.as_micros() as u64, Ordering::Relaxed);
        self.count.fetch_add(1, Ordering::Relaxed);
    }

    /// The `_bucket`, `_sum` and `_count` lines, `labels` already
    /// formatted (`api="GetRecords",` or empty).
    fn render(&self, out: &mut String, name: &str, labels: &str) {
        let mut cumulative = 0;
        for (b, n) in BUCKETS.iter().zip(&self.buckets) {
            cumulative += n.load(Ordering::Relaxed);
            let _ = writeln!(out, "{name}_bucket{{{labels}le=\"{b}\"}} {cumulative}");
        }
        let count = self.count.load(Ordering::Relaxed);
        let _ = writeln!(out, "{name}_bucket{{{labels}le=\"+Inf\"}} {count}");
        let sum = self.sum_micros.load(Ordering::Relaxed) as f64 / 1e6;
        let braces = |l: &str| {
            if l.is_empty() {
                String::new()
            } else {
                format!("{{{}}}", l.trim_end_matches(','))
            }
        };
        let _ = writeln!(out, "{name}_sum{} {sum:.6}", braces(labels));
        let _ = writeln!(out, "{name}_count{} {count}", braces(labels));
    }
}

/// The APIs whose calls are counted (label `api`).
pub const APIS: [&str; 11] = [
    "ListShards",
    "DescribeStreamConsumer",
    "SubscribeToShard",
    "GetShardIterator",
    "GetRecords",
    "ReadLeases",
    "WriteLease",
    "ReadHeartbeats",
    "WriteHeartbeat",
    "SubscriptionEvent",
    "DeleteItem",
];

/// Error classes (label `class`), in [`ErrorClass`] order.
pub const CLASSES: [&str; 10] = [
    "Throttled",
    "ResourceInUse",
    "ResourceNotFound",
    "InvalidArgument",
    "LimitExceeded",
    "ExpiredIterator",
    "ConditionalFailed",
    "Ambiguous",
    "AccessDenied",
    "Transient",
];

/// Lease loss reasons (label `reason`), in [`LostReason`] order.
pub const REASONS: [&str; 5] = [
    "taken",
    "self_fenced",
    "handed_off",
    "released",
    "shard_ended",
];

fn class_index(c: ErrorClass) -> usize {
    match c {
        ErrorClass::Throttled => 0,
        ErrorClass::ResourceInUse => 1,
        ErrorClass::ResourceNotFound => 2,
        ErrorClass::InvalidArgument => 3,
        ErrorClass::LimitExceeded => 4,
        ErrorClass::ExpiredIterator => 5,
        ErrorClass::ConditionalFailed => 6,
        ErrorClass::Ambiguous => 7,
        ErrorClass::AccessDenied => 8,
        ErrorClass::Transient => 9,
    }
}

fn reason_index(r: LostReason) -> usize {
    match r {
        LostReason::Taken => 0,
        LostReason::SelfFenced => 1,
        LostReason::HandedOff => 2,
        LostReason::Released => 3,
        LostReason::ShardEnded => 4,
    }
}

/// The metric handles of one held shard.
#[derive(Debug, Default)]
pub struct ShardMetrics {
    token: AtomicU64,
    millis_behind: AtomicU64,
    records_delivered: AtomicU64,
    bytes_delivered: AtomicU64,
    records_acked: AtomicU64,
    bytes_acked: AtomicU64,
    redeliveries: AtomicU64,
    /// Last successful checkpoint write (the lease gain before the first).
    checkpointed: Mutex<Option<Instant>>,
    /// Cleared at the lease's loss: a batch delivered under the lease and
    /// acked after it is not counted (its lease's series are gone).
    held: AtomicBool,
}

/// What the registry noted at a batch's delivery, carried by the batch and
/// handed back with its ack ([`Metrics::acked`]): the ack is counted
/// without looking its shard or batch up (no map insert per delivery, no
/// lookup per ack).
#[derive(Debug)]
pub(crate) struct Delivered {
    shard: Arc<ShardMetrics>,
    at: Instant,
    records: u64,
    bytes: u64,
}

impl ShardMetrics {
    /// Time since the last successful checkpoint write of the shard (since
    /// the lease gain before the first).
    pub fn checkpoint_age(&self) -> Duration {
        lock(&self.checkpointed).map_or(Duration::ZERO, |t| t.elapsed())
    }
    /// MillisBehindLatest of the last batch delivered.
    pub fn millis_behind_latest(&self) -> u64 {
        self.millis_behind.load(Ordering::Relaxed)
    }
    /// User records delivered since the lease was gained.
    pub fn records_delivered(&self) -> u64 {
        self.records_delivered.load(Ordering::Relaxed)
    }
    /// User records acknowledged since the lease was gained.
    pub fn records_acked(&self) -> u64 {
        self.records_acked.load(Ordering::Relaxed)
    }
}

#[derive(Debug, Default)]
struct Counters {
    records_read: AtomicU64,
    records_delivered: AtomicU64,
    bytes_delivered: AtomicU64,
    records_acked: AtomicU64,
    redeliveries: AtomicU64,
    dead_letters: AtomicU64,
    dead_letters_dropped: AtomicU64,
    leases_gained: AtomicU64,
    leases_lost: [AtomicU64; 5],
    self_fences: AtomicU64,
    subscriptions: AtomicU64,
    calls: [AtomicU64; 11],
    errors: [[AtomicU64; 10]; 11],
    pool_records: AtomicU64,
    pool_bytes: AtomicU64,
    bad_rows: AtomicU64,
    call_latency: [Histogram; 11],
    ack_latency: Histogram,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // A panic elsewhere never makes metrics unreadable.
    m.lock().unwrap_or_else(|p| p.into_inner())
}

#[derive(Debug, Default)]
struct State {
    shards: HashMap<ShardRef, Arc<ShardMetrics>>,
    started: Option<Instant>,
    /// Last successful lease-table read (leases or heartbeats).
    table_ok: Option<Instant>,
    /// The last lease-table failure since then.
    table_error: Option<ErrorClass>,
    /// The message of a fatal event.
    fatal: Option<String>,
    /// The core's last health report when failing (its `since` moved to
    /// this registry's clock).
    failing: Option<kinesin_core::health::Health>,
    self_fenced: bool,
    /// Last successful heartbeat write.
    heartbeat_ok: Option<Instant>,
    /// Checkpoint writes awaiting their answer.
    checkpoints: HashMap<u64, ShardRef>,
}

/// Health for a readiness probe.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Health {
    /// Before the first lease-table read.
    Starting,
    /// Holding leases, or none is available to take.
    Ready,
    /// Not working: why, and what to do.
    Failing(String),
}

/// The registry of one driver (cheap to clone: shared).
///
/// ```
/// use std::time::Duration;
/// use kinesin_aws::{Health, Metrics};
///
/// /// A scrape body and a readiness answer, as `kinesin consume
/// /// --metrics-addr` serves them (take the registry from
/// /// `Consumer::metrics()`).
/// fn scrape(metrics: &Metrics) -> (String, u16) {
///     let mut body = String::new();
///     metrics.render(&mut body); // Prometheus text format 0.0.4
///     let status = match metrics.health() {
///         Health::Ready => 200,
///         Health::Starting | Health::Failing(_) => 503,
///     };
///     (body, status)
/// }
///
/// let m = Metrics::new(Duration::from_secs(10), (100_000, 64 << 20));
/// let (body, status) = scrape(&m);
/// assert!(body.contains("kinesin_leases_held 0"));
/// assert_eq!(status, 503); // starting: no lease-table read yet
/// ```
#[derive(Clone, Debug)]
pub struct Metrics {
    counters: Arc<Counters>,
    state: Arc<Mutex<State>>,
    failover: Duration,
    pool_budget: (u64, u64),
}

impl Metrics {
    /// A registry for a worker with this failover time and pool budget
    /// (records, bytes).
    pub fn new(failover: Duration, pool_budget: (u64, u64)) -> Self {
        Metrics {
            counters: Arc::default(),
            state: Arc::new(Mutex::new(State {
                started: Some(Instant::now()),
                ..State::default()
            })),
            failover,
            pool_budget,
        }
    }

    fn state(&self) -> MutexGuard<'_, State> {
        lock(&self.state)
    }

    /// Lease gained: the shard's series start.
    pub fn lease_gained(&self, shard: &ShardRef, token: u64) {
        self.counters.leases_gained.fetch_add(1, Ordering::Relaxed);
        let m = Arc::new(ShardMetrics::default());
        m.token.store(token, Ordering::Relaxed);
        m.held.store(true, Ordering::Relaxed);
        *lock(&m.checkpointed) = Some(Instant::now());
        let mut st = self.state();
        st.shards.insert(shard.clone(), m);
        st.self_fenced = false;
    }

    /// Lease lost: the shard's series go.
    pub fn lease_lost(&self, shard: &ShardRef, reason: LostReason) {
        self.counters.leases_lost[reason_index(reason)].fetch_add(1, Ordering::Relaxed);
        let mut st = self.state();
        if let Some(m) = st.shards.remove(shard) {
            m.held.store(false, Ordering::Relaxed);
        }
        // One self-fence loses every lease at once: counted at its first
        // loss (the flag is cleared only by the next lease gained).
        if reason == LostReason::SelfFenced && !st.self_fenced {
            st.self_fenced = true;
            self.counters.self_fences.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// A fatal event: the worker stops.
    pub fn fatal(&self, message: &str) {
        self.state().fatal = Some(message.to_owned());
    }

    /// The core's health changed ([`kinesin_core::io::Event::Health`]),
    /// `now` read on the clock of the instants inside it (the driver's
    /// runtime): while failing, [`Metrics::health`] is failing with its
    /// message.
    pub fn core_health(&self, health: &kinesin_core::health::Health, now: Instant) {
        use kinesin_core::health::Health as Core;
        let failing = match health {
            Core::Healthy => None,
            Core::Failing {
                service,
                class,
                since,
            } => {
                // Rebased on this registry's clock (`Instant::now`), which
                // may not be the runtime's.
                let spell = now.saturating_duration_since(*since);
                let here = Instant::now();
                Some(Core::Failing {
                    service: *service,
                    class: *class,
                    since: here.checked_sub(spell).unwrap_or(here),
                })
            }
        };
        self.state().failing = failing;
    }

    /// A batch nacked `max_deliveries` times became a dead letter:
    /// `dropped` when it was dropped (`auto_replay_nacks(false)`) instead
    /// of offered to the dead-letter handler.
    pub fn dead_letter(&self, dropped: bool) {
        self.counters.dead_letters.fetch_add(1, Ordering::Relaxed);
        if dropped {
            self.counters
                .dead_letters_dropped
                .fetch_add(1, Ordering::Relaxed);
        }
    }

    /// Dead letters so far: (all, of those dropped).
    pub fn dead_letters(&self) -> (u64, u64) {
        (
            self.counters.dead_letters.load(Ordering::Relaxed),
            self.counters.dead_letters_dropped.load(Ordering::Relaxed),
        )
    }

    /// The handle of a held shard.
    pub fn shard(&self, shard: &ShardRef) -> Option<Arc<ShardMetrics>> {
        self.state().shards.get(shard).cloned()
    }

    /// Shards held now, with their handles, in order.
    pub fn shards(&self) -> BTreeMap<ShardRef, Arc<ShardMetrics>> {
        self.state()
            .shards
            .iter()
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect()
    }

    /// Leases held now.
    pub fn leases_held(&self) -> u64 {
        self.state().shards.len() as u64
    }

    /// A batch handed to the application.
    /// A batch of `records` records was delivered from the shard whose
    /// handle is `shard` (`None`: a shard not held, counted per worker
    /// only). What it returns goes with the batch to [`Metrics::acked`].
    pub(crate) fn delivered(
        &self,
        shard: Option<&Arc<ShardMetrics>>,
        records: u64,
        bytes: u64,
        millis_behind: u64,
        redelivery: bool,
    ) -> Option<Delivered> {
        let c = &self.counters;
        c.records_delivered.fetch_add(records, Ordering::Relaxed);
        c.bytes_delivered.fetch_add(bytes, Ordering::Relaxed);
        if redelivery {
            c.redeliveries.fetch_add(1, Ordering::Relaxed);
        }
        let m = shard?;
        m.millis_behind.store(millis_behind, Ordering::Relaxed);
        m.records_delivered.fetch_add(records, Ordering::Relaxed);
        m.bytes_delivered.fetch_add(bytes, Ordering::Relaxed);
        if redelivery {
            m.redeliveries.fetch_add(1, Ordering::Relaxed);
        }
        Some(Delivered {
            shard: m.clone(),
            at: Instant::now(),
            records,
            bytes,
        })
    }

    /// A batch acknowledged by the application (its ack latency observed),
    /// with what [`Metrics::delivered`] noted at its delivery; nothing when
    /// the lease it was delivered under is gone.
    pub(crate) fn acked(&self, d: Delivered) {
        if !d.shard.held.load(Ordering::Relaxed) {
            return;
        }
        self.counters.ack_latency.observe(d.at.elapsed());
        self.counters
            .records_acked
            .fetch_add(d.records, Ordering::Relaxed);
        d.shard
            .records_acked
            .fetch_add(d.records, Ordering::Relaxed);
        d.shard.bytes_acked.fetch_add(d.bytes, Ordering::Relaxed);
    }

    /// Records read from Kinesis (before delivery).
    pub fn records_read(&self, n: u64) {
        self.counters.records_read.fetch_add(n, Ordering::Relaxed);
    }

    /// A SubscribeToShard started.
    pub fn subscription_started(&self) {
        self.counters.subscriptions.fetch_add(1, Ordering::Relaxed);
    }

    /// Undecodable lease-table rows reported.
    pub fn bad_row(&self) {
        self.counters.bad_rows.fetch_add(1, Ordering::Relaxed);
    }

    /// The pool's use now (records, bytes).
    pub fn pool(&self, records: u64, bytes: u64) {
        self.counters.pool_records.store(records, Ordering::Relaxed);
        self.counters.pool_bytes.store(bytes, Ordering::Relaxed);
    }

    /// Calls of `api` (one of [`APIS`]) answered so far.
    pub fn calls(&self, api: &str) -> u64 {
        APIS.iter()
            .position(|a| *a == api)
            .map(|i| self.counters.calls[i].load(Ordering::Relaxed))
            .unwrap_or(0)
    }

    /// The pool's use (records, bytes) as last reported.
    pub fn pool_used(&self) -> (u64, u64) {
        (
            self.counters.pool_records.load(Ordering::Relaxed),
            self.counters.pool_bytes.load(Ordering::Relaxed),
        )
    }

    /// A lease write was sent: a checkpoint's answer resets its shard's
    /// checkpoint age.
    pub fn lease_write(&self, op: OpId, write: &LeaseWrite) {
        if let LeaseWrite::Checkpoint { shard, .. } = write {
            self.checkpoint_sent(op.raw(), shard);
        }
    }

    fn checkpoint_sent(&self, op: u64, shard: &ShardRef) {
        self.state().checkpoints.insert(op, shard.clone());
    }

    /// A lease write answered: a checkpoint that applied resets its
    /// shard's checkpoint age.
    fn lease_answered(&self, op: u64, ok: bool) {
        let shard = self.state().checkpoints.remove(&op);
        if let (Some(shard), true) = (shard, ok) {
            if let Some(m) = self.shard(&shard) {
                *lock(&m.checkpointed) = Some(Instant::now());
            }
        }
    }

    /// A call's answer arrived `took` after it was spawned.
    pub fn call_took(&self, input: &Input, took: Duration) {
        if let Some(api) = api_of(input) {
            self.counters.call_latency[api].observe(took);
        }
    }

    /// Calls answered: counted by API and, when failed, by error class
    /// (throttles are the `Throttled` class). Also tracks the lease
    /// table's reachability for [`Metrics::health`].
    pub fn observe_input(&self, input: &Input) {
        let Some(api) = api_of(input) else {
            return;
        };
        let err = match input {
            Input::Shards { result, .. } => result.as_ref().err(),
            Input::Consumer { result, .. } => result.as_ref().err(),
            Input::SubscriptionError { class, .. } => Some(class),
            Input::SubscriptionEnded { .. } | Input::SubscriptionEvent { .. } => None,
            Input::Iterator { result, .. } => result.as_ref().err(),
            Input::Records { result, .. } => result.as_ref().err(),
            Input::Leases { result, .. } => result.as_ref().err(),
            Input::LeaseWritten { op, result, .. } => {
                self.lease_answered(op.raw(), result.is_ok());
                result.as_ref().err()
            }
            Input::Heartbeats { result, .. } => result.as_ref().err(),
            Input::HeartbeatWritten { result, .. }
            | Input::HeartbeatDeleted { result, .. }
            | Input::LeaseDeleted { result, .. } => result.as_ref().err(),
        };
        self.call(api, err.copied());
    }

    /// One answered call of `APIS[api]`, failed with `err` if any.
    fn call(&self, api: usize, err: Option<ErrorClass>) {
        self.counters.calls[api].fetch_add(1, Ordering::Relaxed);
        if let Some(class) = err {
            self.counters.errors[api][class_index(class)].fetch_add(1, Ordering::Relaxed);
        }
        if api == 8 && err.is_none() {
            self.state().heartbeat_ok = Some(Instant::now());
        }
        if api == 5 || api == 7 {
            let mut st = self.state();
            match err {
                None => {
                    st.table_ok = Some(Instant::now());
                    st.table_error = None;
                }
                Some(c) => st.table_error = Some(c),
            }
        }
    }

    /// The readiness of the worker now.
    pub fn health(&self) -> Health {
        self.health_at(Instant::now())
    }

    fn health_at(&self, now: Instant) -> Health {
        let st = self.state();
        if let Some(m) = &st.fatal {
            return Health::Failing(format!("stopped: {m}"));
        }
        if let Some(failing) = &st.failing {
            return Health::Failing(failing.message(now));
        }
        let since = st.table_ok.or(st.started).unwrap_or(now);
        let unreachable = now.saturating_duration_since(since);
        if unreachable > self.failover {
            return Health::Failing(format!(
                "lease table unreachable for {:.1} s (failover time {:.1} s){}",
                unreachable.as_secs_f64(),
                self.failover.as_secs_f64(),
                match st.table_error {
                    Some(c) => format!(", last error {c:?}"),
                    None => String::new(),
                }
            ));
        }
        if st.self_fenced && st.shards.is_empty() {
            return Health::Failing(
                "fenced itself: its heartbeat could not be renewed within the failover time \
                 (check the lease table's reachability and throttling)"
                    .to_owned(),
            );
        }
        if st.table_ok.is_none() {
            return Health::Starting;
        }
        Health::Ready
    }

    /// The registry in the Prometheus text exposition format.
    pub fn render(&self, out: &mut String) {
        let c = &self.counters;
        let get = |a: &AtomicU64| a.load(Ordering::Relaxed);
        let head = |out: &mut String, name: &str, kind: &str, help: &str| {
            let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} {kind}");
        };
        let shards = self.shards();
        type Get = fn(&ShardMetrics) -> u64;
        let per_shard: [(&str, &str, &str, Get); 7] = [
            (
                "kinesin_shard_millis_behind_latest",
                "gauge",
                "MillisBehindLatest of the last batch delivered from the shard (milliseconds).",
                |m| m.millis_behind.load(Ordering::Relaxed),
            ),
            (
                "kinesin_shard_fencing_token",
                "gauge",
                "Fencing token of the held lease.",
                |m| m.token.load(Ordering::Relaxed),
            ),
            (
                "kinesin_shard_records_delivered_total",
                "counter",
                "User records delivered from the shard since the lease was gained.",
                |m| m.records_delivered.load(Ordering::Relaxed),
            ),
            (
                "kinesin_shard_bytes_delivered_total",
                "counter",
                "Payload bytes delivered from the shard since the lease was gained (bytes).",
                |m| m.bytes_delivered.load(Ordering::Relaxed),
            ),
            (
                "kinesin_shard_records_acked_total",
                "counter",
                "User records acknowledged on the shard since the lease was gained.",
                |m| m.records_acked.load(Ordering::Relaxed),
            ),
            (
                "kinesin_shard_bytes_acked_total",
                "counter",
                "Payload bytes acknowledged on the shard since the lease was gained (bytes).",
                |m| m.bytes_acked.load(Ordering::Relaxed),
            ),
            (
                "kinesin_shard_redeliveries_total",
                "counter",
                "Batches of the shard delivered again after a nack.",
                |m| m.redeliveries.load(Ordering::Relaxed),
            ),
        ];
        for (name, kind, help, f) in per_shard {
            head(out, name, kind, help);
            for (s, m) in &shards {
                let _ = writeln!(
                    out,
                    "{name}{{stream=\"{}\",shard=\"{}\"}} {}",
                    label(s.stream.as_str()),
                    label(s.shard.as_str()),
                    f(m)
                );
            }
        }
        let simple: [(&str, &str, &str, u64); 13] = [
            (
                "kinesin_leases_held",
                "gauge",
                "Leases this worker holds.",
                shards.len() as u64,
            ),
            (
                "kinesin_leases_gained_total",
                "counter",
                "Leases gained.",
                get(&c.leases_gained),
            ),
            (
                "kinesin_self_fences_total",
                "counter",
                "Times this worker fenced itself (heartbeat not renewed within the failover time) and lost its leases.",
                get(&c.self_fences),
            ),
            (
                "kinesin_records_read_total",
                "counter",
                "User records read from Kinesis.",
                get(&c.records_read),
            ),
            (
                "kinesin_records_delivered_total",
                "counter",
                "User records delivered to the application.",
                get(&c.records_delivered),
            ),
            (
                "kinesin_bytes_delivered_total",
                "counter",
                "Payload bytes delivered to the application (bytes).",
                get(&c.bytes_delivered),
            ),
            (
                "kinesin_records_acked_total",
                "counter",
                "User records acknowledged by the application.",
                get(&c.records_acked),
            ),
            (
                "kinesin_redeliveries_total",
                "counter",
                "Batches delivered again after a nack.",
                get(&c.redeliveries),
            ),
            (
                "kinesin_dead_letters_total",
                "counter",
                "Batches nacked max_deliveries times: offered to the dead-letter handler, or dropped.",
                get(&c.dead_letters),
            ),
            (
                "kinesin_dead_letters_dropped_total",
                "counter",
                "Dead letters dropped (auto_replay_nacks false): their records are not delivered again.",
                get(&c.dead_letters_dropped),
            ),
            (
                "kinesin_subscriptions_started_total",
                "counter",
                "SubscribeToShard calls made (Enhanced Fan-Out (re)starts).",
                get(&c.subscriptions),
            ),
            (
                "kinesin_lease_bad_rows_total",
                "counter",
                "Lease-table rows that did not decode, reported.",
                get(&c.bad_rows),
            ),
            (
                "kinesin_pool_records",
                "gauge",
                "Records received and not yet acknowledged.",
                get(&c.pool_records),
            ),
        ];
        for (name, kind, help, v) in simple {
            head(out, name, kind, help);
            let _ = writeln!(out, "{name} {v}");
        }
        head(
            out,
            "kinesin_pool_bytes",
            "gauge",
            "Bytes received and not yet acknowledged (bytes).",
        );
        let _ = writeln!(out, "kinesin_pool_bytes {}", get(&c.pool_bytes));
        head(
            out,
            "kinesin_pool_budget_records",
            "gauge",
            "The pool's budget in records.",
        );
        let _ = writeln!(out, "kinesin_pool_budget_records {}", self.pool_budget.0);
        head(
            out,
            "kinesin_pool_budget_bytes",
            "gauge",
            "The pool's budget in bytes (bytes).",
        );
        let _ = writeln!(out, "kinesin_pool_budget_bytes {}", self.pool_budget.1);
        head(
            out,
            "kinesin_leases_lost_total",
            "counter",
            "Leases lost or given up, by reason (self_fenced: leases lost to self-fences).",
        );
        for (i, r) in REASONS.iter().enumerate() {
            let _ = writeln!(
                out,
                "kinesin_leases_lost_total{{reason=\"{r}\"}} {}",
                get(&c.leases_lost[i])
            );
        }
        head(
            out,
            "kinesin_calls_total",
            "counter",
            "AWS calls answered (and EFO events read), by API.",
        );
        for (i, api) in APIS.iter().enumerate() {
            let _ = writeln!(
                out,
                "kinesin_calls_total{{api=\"{api}\"}} {}",
                get(&c.calls[i])
            );
        }
        head(
            out,
            "kinesin_call_errors_total",
            "counter",
            "Failed AWS calls by API and error class (class=\"Throttled\": throttles).",
        );
        for (i, api) in APIS.iter().enumerate() {
            for (j, class) in CLASSES.iter().enumerate() {
                let v = get(&c.errors[i][j]);
                if v > 0 {
                    let _ = writeln!(
                        out,
                        "kinesin_call_errors_total{{api=\"{api}\",class=\"{class}\"}} {v}"
                    );
                }
            }
        }
        let throttles: u64 = (0..APIS.len()).map(|i| get(&c.errors[i][0])).sum();
        head(
            out,
            "kinesin_throttles_total",
            "counter",
            "Throttled AWS calls, all APIs.",
        );
        let _ = writeln!(out, "kinesin_throttles_total {throttles}");
        let health = self.health();
        head(
            out,
            "kinesin_healthy",
            "gauge",
            "1 when /healthz is ready, 0 when starting or failing.",
        );
        let _ = writeln!(out, "kinesin_healthy {}", u8::from(health == Health::Ready));
        let st = self.state();
        let age = st
            .table_ok
            .map(|t| t.elapsed().as_secs_f64())
            .unwrap_or(f64::NAN);
        drop(st);
        head(
            out,
            "kinesin_lease_table_read_age_seconds",
            "gauge",
            "Time since the last successful lease-table read (seconds; NaN before the first).",
        );
        let _ = writeln!(out, "kinesin_lease_table_read_age_seconds {age:.3}");
        let heartbeat = self
            .state()
            .heartbeat_ok
            .map(|t| t.elapsed().as_secs_f64())
            .unwrap_or(f64::NAN);
        head(
            out,
            "kinesin_heartbeat_age_seconds",
            "gauge",
            "Time since this worker's last successful heartbeat write (seconds; NaN before the first). \
             Past the failover time minus a margin the worker fences itself.",
        );
        let _ = writeln!(out, "kinesin_heartbeat_age_seconds {heartbeat:.3}");
        head(
            out,
            "kinesin_shard_checkpoint_age_seconds",
            "gauge",
            "Time since the shard's last successful checkpoint write, or since the lease gain \
             before the first (seconds). Grows while nothing new is acknowledged.",
        );
        for (s, m) in &shards {
            let _ = writeln!(
                out,
                "kinesin_shard_checkpoint_age_seconds{{stream=\"{}\",shard=\"{}\"}} {:.3}",
                label(s.stream.as_str()),
                label(s.shard.as_str()),
                m.checkpoint_age().as_secs_f64()
            );
        }
        head(
            out,
            "kinesin_call_duration_seconds",
            "histogram",
            "Latency of AWS calls by API, from the call's start to its answer, timeouts included \
             (seconds; APIs not called yet are left out; SubscribeToShard, a long-lived \
             stream, is not timed).",
        );
        for (api, h) in APIS.iter().zip(&c.call_latency) {
            if h.count.load(Ordering::Relaxed) > 0 {
                h.render(
                    out,
                    "kinesin_call_duration_seconds",
                    &format!("api=\"{api}\","),
                );
            }
        }
        head(
            out,
            "kinesin_batch_ack_seconds",
            "histogram",
            "Time from a batch's delivery to the application until its ack (seconds).",
        );
        c.ack_latency.render(out, "kinesin_batch_ack_seconds", "");
    }
}

/// The index in [`APIS`] of the call an input answers (None: a
/// subscription's end, which answers no call).
fn api_of(input: &Input) -> Option<usize> {
    Some(match input {
        Input::Shards { .. } => 0,
        Input::Consumer { .. } => 1,
        Input::SubscriptionError { .. } => 2,
        Input::SubscriptionEnded { .. } => return None,
        Input::SubscriptionEvent { .. } => 9,
        Input::Iterator { .. } => 3,
        Input::Records { .. } => 4,
        Input::Leases { .. } => 5,
        Input::LeaseWritten { .. } => 6,
        Input::Heartbeats { .. } => 7,
        Input::HeartbeatWritten { .. } => 8,
        Input::HeartbeatDeleted { .. } | Input::LeaseDeleted { .. } => 10,
    })
}

/// A label value escaped as the text format requires (backslash, double
/// quote, newline).
fn label(s: &str) -> String {
    s.replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

#[cfg(test)]
mod tests {
    use super::*;
    use kinesin_core::ids::{ShardId, StreamId};

    fn shard(n: u32) -> ShardRef {
        ShardRef::new(
            StreamId::new("arn:aws:kinesis:r:1:stream/s"),
            ShardId::new(format!("shardId-{n:012}")),
        )
    }

    fn text(m: &Metrics) -> String {
        let mut s = String::new();
        m.render(&mut s);
        s
    }

    #[test]
    fn shard_series_exist_from_lease_gain_until_lease_loss() {
        let m = Metrics::new(Duration::from_secs(10), (100, 1000));
        m.lease_gained(&shard(0), 3);
        m.lease_gained(&shard(1), 4);
        m.delivered(m.shard(&shard(0)).as_ref(), 5, 50, 1234, false);
        let t = text(&m);
        assert!(t.contains("kinesin_shard_millis_behind_latest{stream=\"arn:aws:kinesis:r:1:stream/s\",shard=\"shardId-000000000000\"} 1234"), "{t}");
        assert!(t.contains("shard=\"shardId-000000000001\"} 0"), "{t}");
        assert!(t.contains("kinesin_leases_held 2"), "{t}");
        m.lease_lost(&shard(0), LostReason::HandedOff);
        let t = text(&m);
        assert!(!t.contains("shardId-000000000000"), "{t}");
        assert!(
            t.contains("kinesin_leases_lost_total{reason=\"handed_off\"} 1"),
            "{t}"
        );
        assert!(t.contains("kinesin_records_delivered_total 5"), "{t}");
    }

    #[test]
    fn errors_are_counted_by_api_and_class() {
        let m = Metrics::new(Duration::from_secs(10), (100, 1000));
        m.call(4, Some(ErrorClass::Throttled));
        m.call(6, Some(ErrorClass::ConditionalFailed));
        let t = text(&m);
        assert!(
            t.contains("kinesin_calls_total{api=\"GetRecords\"} 1"),
            "{t}"
        );
        assert!(
            t.contains("kinesin_call_errors_total{api=\"GetRecords\",class=\"Throttled\"} 1"),
            "{t}"
        );
        assert!(
            t.contains(
                "kinesin_call_errors_total{api=\"WriteLease\",class=\"ConditionalFailed\"} 1"
            ),
            "{t}"
        );
        assert!(t.contains("kinesin_throttles_total 1"), "{t}");
    }

    #[test]
    fn health_fails_when_the_lease_table_is_unreachable_longer_than_failover() {
        let m = Metrics::new(Duration::from_secs(10), (100, 1000));
        assert_eq!(m.health(), Health::Starting);
        m.call(7, None);
        assert_eq!(m.health(), Health::Ready);
        m.call(7, Some(ErrorClass::Transient));
        let later = Instant::now() + Duration::from_secs(11);
        match m.health_at(later) {
            Health::Failing(why) => {
                assert!(why.contains("lease table unreachable"), "{why}");
                assert!(why.contains("Transient"), "{why}");
            }
            h => panic!("{h:?}"),
        }
        m.fatal("superseded");
        assert!(matches!(m.health(), Health::Failing(w) if w.contains("superseded")));
    }

    #[test]
    fn a_self_fenced_worker_fails_until_it_gains_a_lease_again() {
        let m = Metrics::new(Duration::from_secs(10), (100, 1000));
        m.call(5, None);
        m.lease_gained(&shard(0), 1);
        m.lease_lost(&shard(0), LostReason::SelfFenced);
        assert!(matches!(m.health(), Health::Failing(w) if w.contains("fenced")));
        m.lease_gained(&shard(0), 2);
        assert_eq!(m.health(), Health::Ready);
    }

    #[test]
    fn a_self_fence_is_counted_once_however_many_leases_it_loses() {
        let m = Metrics::new(Duration::from_secs(10), (100, 1000));
        assert!(text(&m).contains("kinesin_self_fences_total 0"));
        m.lease_gained(&shard(0), 1);
        m.lease_gained(&shard(1), 1);
        m.lease_lost(&shard(0), LostReason::SelfFenced);
        m.lease_lost(&shard(1), LostReason::SelfFenced);
        let t = text(&m);
        assert!(t.contains("kinesin_self_fences_total 1"), "{t}");
        assert!(
            t.contains("kinesin_leases_lost_total{reason=\"self_fenced\"} 2"),
            "{t}"
        );
        // Other losses are no fence; a fence after a new gain is a second.
        m.lease_gained(&shard(0), 2);
        m.lease_lost(&shard(0), LostReason::Taken);
        m.lease_gained(&shard(0), 3);
        m.lease_lost(&shard(0), LostReason::SelfFenced);
        assert!(text(&m).contains("kinesin_self_fences_total 2"));
    }

    #[test]
    fn ages_reset_on_a_successful_checkpoint_or_heartbeat_write_only() {
        let m = Metrics::new(Duration::from_secs(10), (100, 1000));
        assert!(text(&m).contains("kinesin_heartbeat_age_seconds NaN"));
        m.call(8, None);
        let t = text(&m);
        let hb = t
            .lines()
            .find(|l| l.starts_with("kinesin_heartbeat_age_seconds "))
            .unwrap();
        let age: f64 = hb.rsplit(' ').next().unwrap().parse().unwrap();
        assert!((0.0..1.0).contains(&age), "{hb}");
        m.lease_gained(&shard(0), 1);
        std::thread::sleep(Duration::from_millis(30));
        let h = m.shard(&shard(0)).unwrap();
        let before = h.checkpoint_age();
        assert!(before >= Duration::from_millis(30), "{before:?}");
        // A refused checkpoint leaves the age; an applied one resets it;
        // writes of other kinds are not tracked.
        m.checkpoint_sent(7, &shard(0));
        m.lease_answered(7, false);
        assert!(h.checkpoint_age() >= before);
        m.checkpoint_sent(8, &shard(0));
        m.lease_answered(8, true);
        assert!(h.checkpoint_age() < before, "{:?}", h.checkpoint_age());
        m.lease_answered(9, true);
        assert!(m.state().checkpoints.is_empty());
        assert!(text(&m).contains("kinesin_shard_checkpoint_age_seconds{stream=\"arn:aws:kinesis:r:1:stream/s\",shard=\"shardId-000000000000\"} "));
    }

    #[test]
    fn ack_and_call_latencies_land_in_cumulative_buckets() {
        let m = Metrics::new(Duration::from_secs(10), (100, 1000));
        m.lease_gained(&shard(0), 1);
        let first = m.delivered(m.shard(&shard(0)).as_ref(), 2, 20, 0, false);
        m.lease_gained(&shard(1), 1);
        let other = m.delivered(m.shard(&shard(1)).as_ref(), 2, 20, 0, false);
        std::thread::sleep(Duration::from_millis(12));
        m.acked(first.expect("shard 0 is held"));
        // An ack of a batch delivered under a lease that is gone since
        // observes nothing.
        m.lease_lost(&shard(1), LostReason::HandedOff);
        m.acked(other.expect("shard 1 was held"));
        m.counters.call_latency[4].observe(Duration::from_millis(70));
        m.counters.call_latency[4].observe(Duration::from_secs(60));
        let t = text(&m);
        for want in [
            "kinesin_batch_ack_seconds_bucket{le=\"0.01\"} 0",
            "kinesin_batch_ack_seconds_bucket{le=\"30\"} 1",
            "kinesin_batch_ack_seconds_bucket{le=\"+Inf\"} 1",
            "kinesin_batch_ack_seconds_count 1",
            "kinesin_call_duration_seconds_bucket{api=\"GetRecords\",le=\"0.05\"} 0",
            "kinesin_call_duration_seconds_bucket{api=\"GetRecords\",le=\"0.1\"} 1",
            "kinesin_call_duration_seconds_bucket{api=\"GetRecords\",le=\"30\"} 1",
            "kinesin_call_duration_seconds_bucket{api=\"GetRecords\",le=\"+Inf\"} 2",
            "kinesin_call_duration_seconds_sum{api=\"GetRecords\"} 60.070000",
            "kinesin_call_duration_seconds_count{api=\"GetRecords\"} 2",
        ] {
            assert!(t.contains(want), "{want} not in\n{t}");
        }
        assert!(
            !t.contains("api=\"ListShards\",le"),
            "uncalled APIs left out"
        );
        // The acked batch counts for its shard; the one acked after its
        // lease went counts nowhere.
        assert_eq!(m.shard(&shard(0)).unwrap().records_acked(), 2);
        assert_eq!(m.counters.records_acked.load(Ordering::Relaxed), 2);
    }

    #[test]
    fn label_values_are_escaped() {
        assert_eq!(label("a\"b\\c\nd"), "a\\\"b\\\\c\\nd");
    }
}

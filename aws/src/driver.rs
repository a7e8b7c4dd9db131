//! The driver: one loop that runs a core [`Worker`] against Kinesis and a
//! lease store, on any executor (through [`Runtime`]).
//!
//! Models: the runtime half of the Sans-IO contract (DESIGN.md "Runtimes").
//! One task owns the `Worker` and repeats:
//!
//! 1. drain `poll_action`: each request becomes a spawned task that performs
//!    the SDK call (with a deadline) and reports the answering [`Input`] on
//!    a channel; a `Subscribe` becomes a per-subscription task that owns the
//!    event stream and reads exactly one event per `Pull` credit;
//! 2. drain `poll_event`: batches become application [`Batch`]es whose
//!    payload is their range of the stored chunk's records, moved out of
//!    it (never copied); dead letters (a batch nacked `max_deliveries`
//!    times) are [`DeadLetter`]s on their own channel; `ChunkDone` frees
//!    what is left of a chunk;
//! 3. wait on {reports, application commands (ack, nack, shutdown), one
//!    reusable timer at `poll_timeout`}, then take every command and report
//!    already queued (bounded), feed them, call `handle_timeout` when the
//!    deadline passed on the runtime's clock. The timer is moved only when
//!    the core's deadline changes.
//!
//! Per batch, the driver does no map work on the ack path and builds no
//! strings: the batch carries its payload, an ack names its id, metric
//! handles are registered once (per shard for
//! `kinesin_millis_behind_latest`, set once per chunk), and acks sent while
//! the driver was busy are applied in one burst on its next wake-up.
//!
//! Rules encoded: a delivered batch holds its payload until it is acked; a
//! nack (or dropping it) hands the payload back, and the driver keeps it for
//! the redelivery of the same [`BatchId`] (possibly after its chunk was
//! freed) until then or until its lease is lost; every action is answered
//! exactly once (calls that hang are cut off at the call timeout with the
//! core's `Action::timeout_class`: `Ambiguous` for lease writes,
//! `Transient` otherwise); a cancelled subscription's task ends and closes its
//! connection. The driver keeps no shard knowledge of its own: a read
//! carries its shard's hash range, and Kinesis records become user records
//! through the core's `kpl::expand`.
//!
//! A lease-table read that found rows that do not decode feeds the core the
//! rows that do (failover and balancing go on without the bad row) and
//! warns once per bad row, naming the row, the field and what to do.
//!
//! Invariants: the `Worker` is touched by this task only; the channels to
//! the application are unbounded but hold at most what the core's pool
//! admitted (batches) or one message per outstanding action (reports).

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::future::{poll_fn, Future};
use std::pin::pin;
use std::sync::{Arc, Mutex, PoisonError};
use std::task::Poll;
use std::time::{Duration, Instant};

use futures_core::Stream;
use kinesin_core::ids::{BatchId, ChunkId, FencingToken, ShardRef, StreamId, SubId};
use kinesin_core::io::{Action, Event, Input, LostReason};
use kinesin_core::kpl::HashRange;
use kinesin_core::sequence::ExtSeq;
use kinesin_core::Worker;
use tracing::{debug, info, warn, Instrument};

use crate::error::KinesisError;
use crate::facade;
use crate::kinesis::{Kinesis, Payloads, Record};
use crate::lease_store::{LeaseStore, RowError};
use crate::metrics::Delivered;
use crate::runtime::{with_deadline, Runtime};

/// What the driver hands to the application: a batch, or why the consumer
/// stopped.
pub type Delivery = Result<Batch, DriverError>;

/// What one message of the delivery channel carries. With one batch
/// stream taken, the deliveries of one pass of the driver over the core's
/// events go as one burst (one channel send, one wake-up of the
/// application's task for all of them); with several streams, one by one,
/// so that they spread over the streams.
#[derive(Debug)]
pub enum Deliveries {
    /// One delivery.
    One(Delivery),
    /// Several, in order.
    Burst(Vec<Delivery>),
}

/// Receivers of the delivery channel while at most one batch stream is
/// taken: the driver's own (taking back what was not taken at shutdown)
/// and the [`DriverHandle`]'s, plus the stream's.
const BURST_RECEIVERS: usize = 3;

/// A failure reported to the application through the batch stream.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum DriverError {
    /// The worker cannot go on (e.g. the EFO consumer is being deleted); it
    /// shut down.
    #[error("consumer stopped: {0}")]
    Fatal(String),
    /// Every call to a service has been refused (credentials, access,
    /// KMS) for `Config::unhealthy_after`: nothing is being consumed. Not
    /// fatal: the calls are still retried and batches resume when access
    /// comes back (the stream goes on after this error).
    #[error("consumer unhealthy: {0}")]
    Unhealthy(String),
}

/// A command from the application (or a batch handle) to the driver.
#[derive(Debug)]
pub(crate) enum Command {
    /// With what the metrics registry noted at its delivery (its ack is
    /// counted from it).
    Ack(BatchId, Option<Delivered>),
    /// Acks are waiting in the [`Link`]: sent by the ack that found it
    /// empty, so one wake-up serves every ack made until the driver takes
    /// them.
    Acks,
    /// A batch comes back: its payload with it, kept for the redelivery.
    Nack {
        id: BatchId,
        shard: ShardRef,
        records: Vec<Record>,
    },
    Shutdown(async_channel::Sender<()>),
    /// Stop at once, like a crash: no final checkpoints, no release.
    Abort,
}

/// What every batch (and dead letter) of a driver shares with it: the
/// command channel (nacks) and the acks made since the driver last took
/// them. An ack is pushed here under an uncontended lock; only the ack that
/// finds the queue empty sends [`Command::Acks`] (a channel send and a
/// wake-up of the driver), so acks made while the driver is busy or not
/// yet scheduled cost no wake-up each and are applied in one burst.
#[derive(Debug)]
pub(crate) struct Link {
    commands: async_channel::Sender<Command>,
    acks: Mutex<Vec<(BatchId, Option<Delivered>)>>,
}

impl Link {
    fn ack(&self, id: BatchId, delivered: Option<Delivered>) {
        let first = {
            let mut q = self.acks.lock().unwrap_or_else(PoisonError::into_inner);
            q.push((id, delivered));
            q.len() == 1
        };
        if first {
            // Closed: the driver is gone, nothing is checkpointed any more.
            let _ = self.commands.try_send(Command::Acks);
        }
    }

    /// Moves the queued acks to the end of `into`.
    fn take_acks(&self, into: &mut Vec<(BatchId, Option<Delivered>)>) {
        let mut q = self.acks.lock().unwrap_or_else(PoisonError::into_inner);
        if into.is_empty() {
            // Swapped, not copied: both vectors keep their capacity.
            std::mem::swap(&mut *q, into);
        } else {
            into.append(&mut q);
        }
    }
}

/// Records delivered to the application, to `ack` when processed.
///
/// Dropping a batch without [`Batch::ack`] is a nack: the same records are
/// delivered again (while this worker holds the shard), and the checkpoint
/// stays before them.
///
/// ```
/// use kinesin_aws::Batch;
///
/// /// Write a batch to a sink that refuses writes under an older fencing
/// /// token than it has seen for the shard; ack only what was written.
/// fn write(batch: Batch, sink: &mut Vec<(String, u64, Vec<u8>)>) -> std::io::Result<()> {
///     let shard = batch.shard().to_string();
///     let newest = sink.iter().filter(|w| w.0 == shard).map(|w| w.1).max();
///     if newest.is_some_and(|t| t > batch.fencing_token()) {
///         batch.nack(); // a later owner wrote already: this worker lost the shard
///         return Ok(());
///     }
///     for r in batch.records() {
///         sink.push((shard.clone(), batch.fencing_token(), r.data().to_vec()));
///     }
///     batch.ack();
///     Ok(())
/// }
/// ```
#[derive(Debug)]
pub struct Batch {
    id: BatchId,
    shard: ShardRef,
    token: FencingToken,
    records: Vec<Record>,
    millis_behind: u64,
    redelivery: bool,
    link: Arc<Link>,
    done: bool,
    /// For the metrics registry, handed back with the ack.
    delivered: Option<Delivered>,
}

impl Batch {
    /// The user records, in shard order.
    pub fn records(&self) -> &[Record] {
        &self.records
    }
    /// Which shard (stream ARN and shard id) they come from.
    pub fn shard(&self) -> &ShardRef {
        &self.shard
    }
    /// The lease's fencing token at delivery: a sink can reject writes
    /// carrying a token lower than one it has seen for this shard.
    pub fn fencing_token(&self) -> u64 {
        self.token.0
    }
    /// The batch id (acks and logs).
    pub fn id(&self) -> BatchId {
        self.id
    }
    /// MillisBehindLatest of the read that brought these records.
    pub fn millis_behind_latest(&self) -> u64 {
        self.millis_behind
    }
    /// True when these records were delivered before and nacked.
    pub fn is_redelivery(&self) -> bool {
        self.redelivery
    }
    /// The records were processed: they may be checkpointed.
    pub fn ack(mut self) {
        self.done = true;
        self.link.ack(self.id, self.delivered.take());
    }
    /// The records could not be processed: deliver them again.
    pub fn nack(self) {
        // Drop does it.
    }
}

impl Drop for Batch {
    fn drop(&mut self) {
        if !self.done {
            // The payload goes back with the nack: the driver keeps only
            // nacked payloads (for their redelivery), never delivered ones.
            let records = std::mem::take(&mut self.records);
            let _ = self.link.commands.try_send(Command::Nack {
                id: self.id,
                shard: self.shard.clone(),
                records,
            });
        }
    }
}

/// The driver's metric handles on the hot path, registered once (with the
/// recorder installed when the consumer is built) instead of per batch:
/// `kinesin_millis_behind_latest{shard}` once per shard, and set once per
/// chunk (every batch of a chunk carries the same value).
struct FacadeMetrics {
    records_delivered: facade::Counter,
    bytes_delivered: facade::Counter,
    millis_behind: HashMap<ShardRef, facade::Gauge>,
    /// The chunk whose MillisBehindLatest was set last.
    millis_chunk: Option<ChunkId>,
}

impl FacadeMetrics {
    fn register() -> Self {
        FacadeMetrics {
            records_delivered: facade::counter("kinesin_records_delivered_total"),
            bytes_delivered: facade::counter("kinesin_bytes_delivered_total"),
            millis_behind: HashMap::new(),
            millis_chunk: None,
        }
    }

    /// A batch of `records` records was delivered.
    fn delivered(&mut self, b: &kinesin_core::io::BatchMeta, records: usize) {
        self.records_delivered.increment(records as u64);
        self.bytes_delivered.increment(b.bytes);
        if self.millis_chunk != Some(b.chunk) || b.redelivery {
            self.millis_chunk = Some(b.chunk);
            let gauge = self
                .millis_behind
                .entry(b.shard.clone())
                .or_insert_with(|| {
                    facade::shard_gauge(
                        "kinesin_millis_behind_latest",
                        b.shard.stream.as_str(),
                        b.shard.shard.as_str(),
                    )
                });
            gauge.set(b.millis_behind as f64);
        }
    }

    /// The shard's lease is gone: its gauge handle is dropped (a later
    /// lease registers it again).
    fn forget_shard(&mut self, shard: &ShardRef) {
        self.millis_behind.remove(shard);
    }
}

/// The payloads of an admitted chunk not yet handed out. The core cuts a
/// chunk's batches in order (`BatchMeta::range` starts at or after the end
/// of the previous one; records it skips are never delivered), so each
/// batch's records are moved out, not copied: a batch pins its own records
/// only, and a whole-read batch costs one allocation.
struct ChunkPayloads {
    records: std::vec::IntoIter<Record>,
    /// Index (in the chunk) of the next record of `records`.
    next: u32,
}

impl ChunkPayloads {
    fn new(records: Payloads) -> Self {
        ChunkPayloads {
            records: records.into_iter(),
            next: 0,
        }
    }

    /// Moves records `range` out (those before it are dropped: the core
    /// skipped them). None when the range starts before what is left (a
    /// batch cut twice from the same records: a bug of the core).
    fn take(&mut self, range: std::ops::Range<u32>) -> Option<Vec<Record>> {
        let skip = range.start.checked_sub(self.next)?;
        if skip > 0 {
            self.records.by_ref().take(skip as usize).for_each(drop);
        }
        let n = range.end.saturating_sub(range.start) as usize;
        let records: Vec<Record> = if n >= self.records.len() {
            // The rest of the chunk (a whole-read batch): collected in
            // place, in the chunk's own allocation, nothing copied.
            std::mem::take(&mut self.records).collect()
        } else {
            self.records.by_ref().take(n).collect()
        };
        self.next = range.start + records.len() as u32;
        Some(records)
    }
}

/// A batch the application nacked `max_deliveries` times (a poison
/// record), for the dead-letter handler. The shard goes on meanwhile; its
/// checkpoint covers these records only once [`DeadLetter::accept`] is
/// called. Dropping it (or [`DeadLetter::reject`]) offers it again after
/// the redelivery backoff, while this worker holds the shard.
#[derive(Debug)]
pub struct DeadLetter {
    batch: Batch,
    attempts: u32,
}

impl DeadLetter {
    /// The user records, in shard order.
    pub fn records(&self) -> &[Record] {
        self.batch.records()
    }
    /// Which shard (stream ARN and shard id) they come from.
    pub fn shard(&self) -> &ShardRef {
        self.batch.shard()
    }
    /// Positions of the first and last record (sequence and sub-sequence
    /// numbers): the range the handler is given.
    pub fn sequence_range(&self) -> Option<(&ExtSeq, &ExtSeq)> {
        let r = self.batch.records();
        Some((r.first()?.position(), r.last()?.position()))
    }
    /// How many times the records were delivered to the application.
    pub fn attempts(&self) -> u32 {
        self.attempts
    }
    /// The batch id (logs).
    pub fn id(&self) -> BatchId {
        self.batch.id()
    }
    /// The lease's fencing token at delivery.
    pub fn fencing_token(&self) -> u64 {
        self.batch.fencing_token()
    }
    /// The handler stored them: the records may be checkpointed.
    pub fn accept(self) {
        self.batch.ack();
    }
    /// The handler could not take them: offer them again after the
    /// redelivery backoff (the checkpoint stays before them).
    pub fn reject(self) {
        // Drop does it.
    }
}

/// What a spawned call task reports.
enum Report {
    Input(Input),
    /// A lease-table read of a partition (a stream's lease rows, `None`:
    /// the heartbeat rows), with the rows that did not decode (skipped).
    WithBadRows {
        input: Input,
        partition: Option<StreamId>,
        bad: Vec<RowError>,
    },
    /// An input that carries records: store them under `chunk` first.
    WithPayload {
        chunk: ChunkId,
        payloads: Payloads,
        input: Input,
    },
}

impl Report {
    fn input(&self) -> &Input {
        match self {
            Report::Input(input)
            | Report::WithBadRows { input, .. }
            | Report::WithPayload { input, .. } => input,
        }
    }
}

/// Driver settings that the core does not know about.
#[derive(Clone, Debug)]
pub struct DriverOptions {
    /// Deadline of one SDK call (SubscribeToShard: until its first event).
    pub call_timeout: Duration,
    /// Dead letters are dropped (acknowledged at once: their records may be
    /// checkpointed) and counted in `kinesin_dead_letters_dropped_total`,
    /// with a warning each, instead of going to [`DriverHandle::dead_letters`]
    /// (Bento's `auto_replay_nacks: false`).
    pub drop_dead_letters: bool,
}

impl Default for DriverOptions {
    fn default() -> Self {
        DriverOptions {
            call_timeout: Duration::from_secs(15),
            drop_dead_letters: false,
        }
    }
}

/// The application's side of a running driver.
#[derive(Debug)]
pub struct DriverHandle {
    commands: async_channel::Sender<Command>,
    deliveries: async_channel::Receiver<Deliveries>,
    dead_letters: async_channel::Receiver<DeadLetter>,
    metrics: crate::metrics::Metrics,
    events: crate::events::EventHub,
}

impl DriverHandle {
    /// A receiver of dead letters (cloneable; each goes to one receiver).
    /// Empty unless `max_deliveries` is set. Closed after shutdown.
    pub fn dead_letters(&self) -> async_channel::Receiver<DeadLetter> {
        self.dead_letters.clone()
    }

    /// A receiver of batches (cloneable; each batch goes to one receiver).
    /// While at most one receiver is taken from here, batches come in
    /// bursts ([`Deliveries::Burst`]); with more, one by one.
    pub fn deliveries(&self) -> async_channel::Receiver<Deliveries> {
        self.deliveries.clone()
    }

    /// Ask for a graceful shutdown; the returned receiver yields `()` (or is
    /// closed) once it completed.
    pub fn shutdown(&self) -> async_channel::Receiver<()> {
        let (tx, rx) = async_channel::bounded(1);
        let _ = self.commands.try_send(Command::Shutdown(tx));
        rx
    }

    /// Stop at once, like a crash (no final checkpoints, leases not
    /// released: others take them after the failover time).
    pub fn abort(&self) {
        let _ = self.commands.try_send(Command::Abort);
    }

    /// The driver's metrics registry (per-shard series while a lease is
    /// held, per-worker counters, health).
    pub fn metrics(&self) -> &crate::metrics::Metrics {
        &self.metrics
    }

    /// A stream of lease events: the leases held now, then every gain,
    /// loss and shard end (see [`crate::events`]).
    pub fn lease_events(&self) -> crate::events::LeaseEvents {
        self.events.subscribe()
    }
}

/// A dropped handle stops its driver gracefully: final checkpoints, leases
/// released (the driver holds a command sender of its own for batches, so
/// without this a forgotten handle would keep its leases for ever). After
/// [`DriverHandle::abort`] or a completed shutdown this does nothing.
impl Drop for DriverHandle {
    fn drop(&mut self) {
        let (tx, _rx) = async_channel::bounded(1);
        let _ = self.commands.try_send(Command::Shutdown(tx));
    }
}

/// The loop that runs one [`Worker`]. See the module doc.
pub struct Driver<R: Runtime> {
    runtime: Arc<R>,
    worker: Worker,
    kinesis: Kinesis,
    store: Arc<dyn LeaseStore>,
    options: DriverOptions,
    reports_tx: async_channel::Sender<Report>,
    reports_rx: async_channel::Receiver<Report>,
    commands_tx: async_channel::Sender<Command>,
    commands_rx: async_channel::Receiver<Command>,
    /// Shared with every batch: their acks.
    link: Arc<Link>,
    deliveries_tx: async_channel::Sender<Deliveries>,
    /// Deliveries of the current pass over the core's events, sent as one
    /// burst at its end (see [`Deliveries`]).
    outbox: Vec<Delivery>,
    /// Our own receiver of the deliveries, to take back undelivered batches
    /// at shutdown.
    deliveries_rx: async_channel::Receiver<Deliveries>,
    dead_letters_tx: async_channel::Sender<DeadLetter>,
    /// Our own receiver, to take back dead letters not taken at shutdown.
    dead_letters_rx: async_channel::Receiver<DeadLetter>,
    /// Payloads of admitted chunks, until `ChunkDone`.
    chunks: BTreeMap<ChunkId, ChunkPayloads>,
    /// Payloads of nacked batches, until redelivered (or their lease is
    /// lost): a delivered batch carries its payload, and a nack brings it
    /// back, so acked batches cost no bookkeeping here.
    nacked: BTreeMap<BatchId, (ShardRef, Vec<Record>)>,
    /// Facade (`metrics` crate) handles of the hot path.
    facade: FacadeMetrics,
    /// The acks taken in one run of queued commands (reused).
    ack_run: Vec<(BatchId, Option<Delivered>)>,
    /// The registry handle of the shard of the chunk delivered from last.
    shard_metrics: Option<(ChunkId, Option<Arc<crate::metrics::ShardMetrics>>)>,
    subs: HashMap<SubId, async_channel::Sender<ChunkId>>,
    shutdown_waiters: Vec<async_channel::Sender<()>>,
    leases_held: usize,
    /// Pool usage last published as gauges (records, bytes).
    pool_shown: (u64, u64),
    /// Lease-table rows that did not decode at the last successful read of
    /// their partition (a stream's lease rows, `None`: the heartbeat rows):
    /// each is reported once, and again only after a read without it
    /// (repaired or deleted) and a later one with it.
    bad_rows: HashMap<Option<StreamId>, BTreeSet<RowError>>,
    /// The registry behind `DriverHandle::metrics`.
    metrics: crate::metrics::Metrics,
    /// The fan-out behind `DriverHandle::lease_events`.
    events: crate::events::EventHub,
}

impl<R: Runtime> std::fmt::Debug for Driver<R> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Driver")
            .field("owner", self.worker.owner())
            .field("chunks", &self.chunks.len())
            .field("nacked", &self.nacked.len())
            .field("subs", &self.subs.len())
            .finish_non_exhaustive()
    }
}

impl<R: Runtime> Driver<R> {
    /// A driver for `worker`, and the application's handle to it. Run it
    /// with [`Driver::run`] (or [`Driver::spawn`]).
    pub fn new(
        runtime: Arc<R>,
        worker: Worker,
        kinesis: Kinesis,
        store: Arc<dyn LeaseStore>,
        options: DriverOptions,
    ) -> (Self, DriverHandle) {
        let (reports_tx, reports_rx) = async_channel::unbounded();
        let (commands_tx, commands_rx) = async_channel::unbounded();
        let (deliveries_tx, deliveries_rx) = async_channel::unbounded();
        let (dead_letters_tx, dead_letters_rx) = async_channel::unbounded();
        let config = worker.config();
        let metrics = crate::metrics::Metrics::new(
            config.failover_time,
            (config.pool_records, config.pool_bytes),
        );
        let events = crate::events::EventHub::default();
        let handle = DriverHandle {
            commands: commands_tx.clone(),
            deliveries: deliveries_rx.clone(),
            dead_letters: dead_letters_rx.clone(),
            metrics: metrics.clone(),
            events: events.clone(),
        };
        let driver = Driver {
            runtime,
            worker,
            kinesis,
            store,
            options,
            reports_tx,
            reports_rx,
            link: Arc::new(Link {
                commands: commands_tx.clone(),
                acks: Mutex::new(Vec::new()),
            }),
            commands_tx,
            commands_rx,
            deliveries_tx,
            outbox: Vec::new(),
            deliveries_rx,
            dead_letters_tx,
            dead_letters_rx,
            chunks: BTreeMap::new(),
            bad_rows: HashMap::new(),
            nacked: BTreeMap::new(),
            facade: FacadeMetrics::register(),
            ack_run: Vec::new(),
            shard_metrics: None,
            subs: HashMap::new(),
            shutdown_waiters: Vec::new(),
            leases_held: 0,
            pool_shown: (0, 0),
            metrics,
            events,
        };
        (driver, handle)
    }

    /// Run the loop as a task on the runtime.
    /// A panic inside the loop is not a clean stop: the application's
    /// batch stream gets [`DriverError::Fatal`] naming it, then ends.
    pub fn spawn(self) {
        let runtime = self.runtime.clone();
        let span = tracing::info_span!("kinesin", worker = %self.worker.owner());
        let deliveries = self.deliveries_tx.clone();
        let run = std::panic::AssertUnwindSafe(self.run().instrument(span));
        runtime.spawn(Box::pin(async move {
            if let Err(panic) = futures_lite::FutureExt::catch_unwind(run).await {
                let what = panic
                    .downcast_ref::<&str>()
                    .map(|s| (*s).to_owned())
                    .or_else(|| panic.downcast_ref::<String>().cloned())
                    .unwrap_or_else(|| "a panic".to_owned());
                tracing::error!("the kinesin driver panicked: {what}");
                let _ = deliveries.try_send(Deliveries::One(Err(DriverError::Fatal(format!(
                    "the kinesin driver panicked ({what}); this is a bug: please report it. \
                     Leases are left to expire; restart the consumer"
                )))));
                deliveries.close();
            }
        }));
    }

    /// Run until shutdown completes, the application aborts, or every
    /// handle is gone.
    pub async fn run(mut self) {
        let far = Duration::from_secs(3600);
        let mut timer = self.runtime.new_timer(self.runtime.now() + far);
        let mut reports = pin!(self.reports_rx.clone());
        let mut commands = pin!(self.commands_rx.clone());
        // The deadline the timer is armed for (`None`: arm it): moved only
        // when the core's deadline changes, not on every wake-up (an
        // async-io timer reset is a message to the reactor).
        let mut armed: Option<Option<Instant>> = None;
        loop {
            self.drain();
            if self.worker.is_done() {
                break;
            }
            let deadline = self.worker.poll_timeout().map(|(at, _)| at);
            if armed != Some(deadline) {
                timer
                    .as_mut()
                    .reset(deadline.unwrap_or_else(|| self.runtime.now() + far));
                armed = Some(deadline);
            }
            enum Wake {
                Report(Report),
                Command(Command),
                Timer,
                Closed,
            }
            let wake = poll_fn(|cx| {
                match commands.as_mut().poll_next(cx) {
                    Poll::Ready(Some(c)) => return Poll::Ready(Wake::Command(c)),
                    // Every handle and batch is gone: nobody can ack or
                    // shut down any more.
                    Poll::Ready(None) => return Poll::Ready(Wake::Closed),
                    Poll::Pending => {}
                }
                if let Poll::Ready(Some(r)) = reports.as_mut().poll_next(cx) {
                    return Poll::Ready(Wake::Report(r));
                }
                timer.as_mut().poll(cx).map(|()| Wake::Timer)
            })
            .await;
            let mut stop = false;
            match wake {
                Wake::Report(r) => self.handle_report(r),
                Wake::Command(Command::Abort) | Wake::Closed => stop = true,
                Wake::Command(Command::Ack(id, delivered)) => self.ack_run.push((id, delivered)),
                // `take_commands` takes the queued acks next.
                Wake::Command(Command::Acks) => {}
                Wake::Command(c) => self.handle_command(c),
                // Fired: armed again on the next turn, even for the same
                // deadline.
                Wake::Timer => armed = None,
            }
            // Take whatever else is ready without waiting (bounded): the
            // acks the application sent meanwhile are applied in one burst,
            // with one clock reading, before the core is drained again.
            if !stop {
                stop = self.take_commands();
            }
            if stop {
                info!("stopped without shutdown: leases are left to expire");
                break;
            }
            for _ in 0..256 {
                match self.reports_rx.try_recv() {
                    Ok(r) => self.handle_report(r),
                    Err(_) => break,
                }
            }
            let now = self.runtime.now();
            if deadline.is_some_and(|d| now >= d) {
                self.worker.handle_timeout(now);
            }
        }
        for w in self.shutdown_waiters.drain(..) {
            let _ = w.try_send(());
        }
        // Subscription tasks end when their credit senders drop here.
        self.subs.clear();
        self.flush_outbox();
        self.deliveries_tx.close();
        self.dead_letters_tx.close();
    }

    fn handle_report(&mut self, report: Report) {
        let now = self.runtime.now();
        let input = match report {
            Report::Input(input) => input,
            Report::WithBadRows {
                input,
                partition,
                bad,
            } => {
                let answered = matches!(
                    input,
                    Input::Leases { result: Ok(_), .. } | Input::Heartbeats { result: Ok(_), .. }
                );
                if answered {
                    self.report_bad_rows(partition, bad);
                }
                input
            }
            Report::WithPayload {
                chunk,
                payloads,
                input,
            } => {
                self.metrics.records_read(payloads.len() as u64);
                self.chunks.insert(chunk, ChunkPayloads::new(payloads));
                input
            }
        };
        self.forget_ended_subscription(&input);
        self.metrics.observe_input(&input);
        self.worker.handle_input(now, input);
    }

    /// Report each undecodable row of a lease-table read once (a warning
    /// naming the row, the field and what to do, and the
    /// `kinesin_lease_bad_rows_total` counter); the read's other rows go
    /// to the core as usual, so failover and balancing carry on without
    /// the bad row. A row read fine again is forgotten.
    fn report_bad_rows(&mut self, partition: Option<StreamId>, bad: Vec<RowError>) {
        let now: BTreeSet<RowError> = bad.into_iter().collect();
        let before = self.bad_rows.remove(&partition).unwrap_or_default();
        for e in now.iter().filter(|e| !before.contains(*e)) {
            facade::counter("kinesin_lease_bad_rows_total").increment(1);
            self.metrics.bad_row();
            if partition.is_none() {
                warn!(
                    "skipping a heartbeat row that does not decode ({e}): other workers' \
                     liveness is judged without it; a worker whose own row it is rewrites it \
                     with its next heartbeat"
                );
            } else {
                warn!(
                    "skipping a lease row that does not decode ({e}): nobody reads its shard \
                     until the row is repaired or deleted; the stream's other shards are read"
                );
            }
        }
        if !now.is_empty() {
            self.bad_rows.insert(partition, now);
        }
    }

    /// Apply every command already queued (bounded), without waiting: runs
    /// of acks go to the core together ([`Worker::ack_many`], one pass over
    /// the worker per run instead of per batch). True when one was Abort.
    fn take_commands(&mut self) -> bool {
        // Holds the ack that woke the loop, if one did.
        let mut acks = std::mem::take(&mut self.ack_run);
        self.link.take_acks(&mut acks);
        let mut abort = false;
        for _ in 0..4096 {
            match self.commands_rx.try_recv() {
                Ok(Command::Ack(id, delivered)) => acks.push((id, delivered)),
                Ok(Command::Acks) => self.link.take_acks(&mut acks),
                Ok(Command::Abort) => {
                    abort = true;
                    break;
                }
                Ok(c) => {
                    // Keep the order: the acks before it go first.
                    self.apply_acks(&mut acks);
                    self.handle_command(c);
                }
                Err(_) => break,
            }
        }
        self.apply_acks(&mut acks);
        self.ack_run = acks;
        abort
    }

    fn apply_acks(&mut self, acks: &mut Vec<(BatchId, Option<Delivered>)>) {
        if acks.is_empty() {
            return;
        }
        let now = self.runtime.now();
        let metrics = &self.metrics;
        let ids = acks.drain(..).map(|(id, delivered)| {
            if let Some(d) = delivered {
                metrics.acked(d);
            }
            id
        });
        self.worker.ack_many(now, ids, |e| debug!("{e}"));
    }

    fn handle_command(&mut self, command: Command) {
        let now = self.runtime.now();
        match command {
            Command::Ack(id, delivered) => {
                if let Some(d) = delivered {
                    self.metrics.acked(d);
                }
                if let Err(e) = self.worker.ack(now, id) {
                    debug!("{e}");
                }
            }
            Command::Acks => {
                let mut acks = std::mem::take(&mut self.ack_run);
                self.link.take_acks(&mut acks);
                self.apply_acks(&mut acks);
                self.ack_run = acks;
            }
            Command::Nack { id, shard, records } => match self.worker.nack(now, id) {
                Ok(()) => {
                    self.nacked.insert(id, (shard, records));
                }
                Err(e) => debug!("{e}"),
            },
            Command::Shutdown(done) => {
                info!("shutting down: final checkpoints, then leases released");
                self.shutdown_waiters.push(done);
                self.worker.shutdown(now);
                // Batches the application has not taken yet will not be
                // processed: nack them (dropping them does) so the shutdown
                // does not wait for them.
                while let Ok(delivery) = self.deliveries_rx.try_recv() {
                    drop(delivery);
                }
                while let Ok(letter) = self.dead_letters_rx.try_recv() {
                    drop(letter);
                }
                while let Ok(c) = self.commands_rx.try_recv() {
                    self.handle_command(c);
                }
            }
            Command::Abort => {}
        }
    }

    /// A subscription task that ended drops its credit sender (the core
    /// resubscribes with a new id).
    fn forget_ended_subscription(&mut self, input: &Input) {
        if let Input::SubscriptionEnded { sub } | Input::SubscriptionError { sub, .. } = input {
            self.subs.remove(sub);
        }
    }

    /// Hands a delivery to the application: into the outbox while at most
    /// one batch stream is taken, else sent at once (after the outbox, to
    /// keep the order).
    fn emit(&mut self, delivery: Delivery) {
        if self.deliveries_tx.receiver_count() <= BURST_RECEIVERS {
            self.outbox.push(delivery);
        } else {
            self.flush_outbox();
            // Closed: a batch comes back as a nack through Drop.
            let _ = self.deliveries_tx.try_send(Deliveries::One(delivery));
        }
    }

    /// Sends what the outbox holds, as one message.
    fn flush_outbox(&mut self) {
        let message = match self.outbox.len() {
            0 => return,
            1 => Deliveries::One(self.outbox.pop().expect("one")),
            _ => Deliveries::Burst(std::mem::take(&mut self.outbox)),
        };
        // Closed: the batches come back as nacks through Drop.
        let _ = self.deliveries_tx.try_send(message);
    }

    /// Drain actions and events until both are empty, then send the
    /// deliveries they made.
    fn drain(&mut self) {
        loop {
            let mut progress = false;
            while let Some(action) = self.worker.poll_action() {
                progress = true;
                self.perform(action);
            }
            while let Some(event) = self.worker.poll_event() {
                progress = true;
                self.handle_event(event);
            }
            if !progress {
                break;
            }
        }
        self.flush_outbox();
        // Pool gauges: what is received and not yet acknowledged (also
        // visible while the application's sink is stalled).
        let (records, bytes) = self.worker.pool_used();
        if (records, bytes) != self.pool_shown {
            self.pool_shown = (records, bytes);
            facade::gauge("kinesin_pool_records").set(records as f64);
            facade::gauge("kinesin_pool_bytes").set(bytes as f64);
            self.metrics.pool(records, bytes);
        }
    }

    fn handle_event(&mut self, event: Event) {
        match event {
            Event::Batch(b) => {
                let records = if b.redelivery {
                    match self.nacked.remove(&b.id) {
                        Some((_, records)) => records,
                        None => {
                            warn!(batch = %b.id, "redelivery of a batch whose payload is gone");
                            return;
                        }
                    }
                } else {
                    let Some(payloads) = self.chunks.get_mut(&b.chunk) else {
                        warn!(chunk = %b.chunk, "batch of an unknown chunk");
                        return;
                    };
                    match payloads.take(b.range.clone()) {
                        Some(records) => records,
                        None => {
                            warn!(batch = %b.id, chunk = %b.chunk, "batch of records already handed out");
                            return;
                        }
                    }
                };
                self.facade.delivered(&b, records.len());
                // The shard's registry handle, looked up once per chunk
                // (every batch of a chunk has the same shard and lease).
                let cached = self
                    .shard_metrics
                    .as_ref()
                    .filter(|(chunk, _)| !b.redelivery && *chunk == b.chunk);
                let handle = match cached {
                    Some((_, handle)) => handle.clone(),
                    None => {
                        let handle = self.metrics.shard(&b.shard);
                        self.shard_metrics = Some((b.chunk, handle.clone()));
                        handle
                    }
                };
                let delivered = self.metrics.delivered(
                    handle.as_ref(),
                    records.len() as u64,
                    b.bytes,
                    b.millis_behind,
                    b.redelivery,
                );
                let batch = Batch {
                    id: b.id,
                    shard: b.shard,
                    token: b.token,
                    records,
                    millis_behind: b.millis_behind,
                    redelivery: b.redelivery,
                    link: self.link.clone(),
                    done: false,
                    delivered,
                };
                self.emit(Ok(batch));
            }
            Event::DeadLetter { batch: b, attempts } => {
                // A dead letter follows its last nack: the payload came
                // back with it.
                let Some((_, records)) = self.nacked.remove(&b.id) else {
                    warn!(batch = %b.id, "dead letter of a batch whose payload is gone");
                    return;
                };
                facade::counter("kinesin_dead_letters_total").increment(1);
                self.metrics.dead_letter(self.options.drop_dead_letters);
                if self.options.drop_dead_letters {
                    facade::counter("kinesin_dead_letters_dropped_total").increment(1);
                    warn!(
                        shard = %b.shard,
                        batch = %b.id,
                        attempts,
                        records = records.len(),
                        "nacked batch dropped (auto_replay_nacks: false)"
                    );
                    let _ = self.commands_tx.try_send(Command::Ack(b.id, None));
                    return;
                }
                warn!(
                    shard = %b.shard,
                    batch = %b.id,
                    attempts,
                    records = records.len(),
                    "batch nacked max_deliveries times: offered to the dead-letter handler"
                );
                let letter = DeadLetter {
                    batch: Batch {
                        id: b.id,
                        shard: b.shard,
                        token: b.token,
                        records,
                        millis_behind: b.millis_behind,
                        redelivery: true,
                        link: self.link.clone(),
                        done: false,
                        delivered: None,
                    },
                    attempts,
                };
                if let Err(e) = self.dead_letters_tx.try_send(letter) {
                    // Closed: it comes back as a nack through Drop.
                    drop(e);
                }
            }
            Event::ChunkDone { chunk } => {
                self.chunks.remove(&chunk);
            }
            Event::LeaseAcquired {
                shard,
                token,
                start,
            } => {
                self.events.publish(crate::events::LeaseEvent::Gained {
                    shard: shard.clone(),
                    token: token.0,
                    start,
                });
                self.leases_held += 1;
                facade::gauge("kinesin_leases_held").set(self.leases_held as f64);
                self.metrics.lease_gained(&shard, token.0);
                info!(%shard, token = token.0, "lease acquired");
            }
            Event::LeaseLost {
                shard,
                token,
                reason,
            } => {
                self.leases_held = self.leases_held.saturating_sub(1);
                facade::gauge("kinesin_leases_held").set(self.leases_held as f64);
                self.nacked.retain(|_, (s, _)| *s != shard);
                self.facade.forget_shard(&shard);
                self.shard_metrics = None;
                self.metrics.lease_lost(&shard, reason);
                self.events.publish(crate::events::LeaseEvent::Lost {
                    shard: shard.clone(),
                    token: token.0,
                    reason,
                });
                if reason == LostReason::Taken || reason == LostReason::SelfFenced {
                    warn!(%shard, token = token.0, ?reason, "lease lost");
                } else {
                    info!(%shard, token = token.0, ?reason, "lease given up");
                }
            }
            Event::ShardEnded { shard } => {
                info!(%shard, "shard read to its end");
                self.events
                    .publish(crate::events::LeaseEvent::ShardEnded { shard });
            }
            Event::ShardFailed { shard, class } => {
                warn!(%shard, ?class, "shard cannot be read; lease released")
            }
            Event::Warning { shard, message } => match shard {
                Some(shard) => warn!(%shard, "{message}"),
                None => warn!("{message}"),
            },
            Event::Health(health) => {
                let now = self.runtime.now();
                // `/healthz` and `Metrics::health` fail with it (and not
                // only the batch stream, which an application may stop
                // reading at its first error).
                self.metrics.core_health(&health, now);
                let message = health.message(now);
                if health == kinesin_core::health::Health::Healthy {
                    info!("{message}");
                } else {
                    // Not fatal: calls are still retried, batches resume
                    // when access comes back.
                    tracing::error!("{message}");
                    self.emit(Err(DriverError::Unhealthy(message)));
                }
            }
            Event::Fatal { message } => {
                warn!("fatal: {message}");
                self.metrics.fatal(&message);
                self.emit(Err(DriverError::Fatal(message)));
            }
            Event::ShutdownComplete => {
                info!("shutdown complete");
                self.events.close();
                self.chunks.clear();
                self.nacked.clear();
            }
        }
    }

    fn spawn_call<F>(&self, span: tracing::Span, call: F)
    where
        F: std::future::Future<Output = Report> + Send + 'static,
    {
        let (tx, metrics, sent) = (
            self.reports_tx.clone(),
            self.metrics.clone(),
            Instant::now(),
        );
        self.runtime.spawn(Box::pin(
            async move {
                let report = call.await;
                metrics.call_took(report.input(), sent.elapsed());
                let _ = tx.send(report).await;
            }
            .instrument(span),
        ));
    }

    /// Perform one action: spawn the call that answers it.
    fn perform(&mut self, action: Action) {
        let rt = self.runtime.clone();
        let timeout = self.options.call_timeout;
        let deadline = move |rt: &Arc<R>| rt.now() + timeout;
        let k = self.kinesis.clone();
        let store = self.store.clone();
        let log = |e: KinesisError| {
            warn!("{e}");
            e.class
        };
        // The one rule (core's): a write that timed out may have applied
        // (Ambiguous), anything else is Transient.
        let timeout_class = action.timeout_class();
        let timed_out = move |op: &'static str| {
            warn!("{op} timed out after {timeout:?}");
            timeout_class
        };
        match action {
            Action::ListShards { op, stream } => {
                self.spawn_call(tracing::Span::current(), async move {
                    let call = k.list_shards(&stream);
                    let result = match with_deadline(&*rt, deadline(&rt), call).await {
                        Some(r) => r.map_err(log),
                        None => Err(timed_out("Kinesis ListShards")),
                    };
                    Report::Input(Input::Shards { op, result })
                });
            }
            Action::RegisterConsumer { op, stream, name } => {
                self.spawn_call(tracing::Span::current(), async move {
                    let call = k.register_consumer(&stream, &name);
                    let result = match with_deadline(&*rt, deadline(&rt), call).await {
                        Some(Err(e)) if e.class == kinesin_core::io::ErrorClass::ResourceInUse => {
                            debug!("{e}");
                            Err(e.class)
                        }
                        Some(r) => r.map_err(log),
                        None => Err(timed_out("Kinesis RegisterStreamConsumer")),
                    };
                    Report::Input(Input::Consumer { op, result })
                });
            }
            Action::DescribeConsumer {
                op,
                stream,
                name,
                arn,
            } => {
                self.spawn_call(tracing::Span::current(), async move {
                    let call = k.describe_consumer(&stream, &name, arn.as_deref());
                    let result = match with_deadline(&*rt, deadline(&rt), call).await {
                        Some(r) => r.map_err(log),
                        None => Err(timed_out("Kinesis DescribeStreamConsumer")),
                    };
                    Report::Input(Input::Consumer { op, result })
                });
            }
            Action::Subscribe {
                sub,
                shard,
                consumer_arn,
                position,
                range,
            } => {
                let (credit_tx, credit_rx) = async_channel::unbounded();
                self.subs.insert(sub, credit_tx);
                let tx = self.reports_tx.clone();
                let span = shard_span(&shard);
                facade::counter("kinesin_subscribe_total").increment(1);
                self.metrics.subscription_started();
                debug!(parent: &span, %sub, ?position, "SubscribeToShard");
                self.runtime.spawn(Box::pin(
                    subscription_task(
                        rt,
                        k,
                        timeout,
                        sub,
                        shard,
                        consumer_arn,
                        position,
                        range,
                        credit_rx,
                        tx,
                    )
                    .instrument(span),
                ));
            }
            Action::Pull { sub, chunk } => match self.subs.get(&sub) {
                Some(credits) => {
                    let _ = credits.try_send(chunk);
                }
                None => warn!(%sub, "pull for an unknown subscription"),
            },
            Action::Cancel { sub } => {
                // Dropping the sender ends the task, which drops the stream.
                self.subs.remove(&sub);
            }
            Action::GetShardIterator {
                op,
                shard,
                position,
            } => {
                self.spawn_call(shard_span(&shard), async move {
                    let call = k.get_shard_iterator(&shard, &position);
                    let result = match with_deadline(&*rt, deadline(&rt), call).await {
                        Some(r) => r.map_err(log),
                        None => Err(timed_out("Kinesis GetShardIterator")),
                    };
                    Report::Input(Input::Iterator { op, result })
                });
            }
            Action::GetRecords {
                op,
                shard,
                iterator,
                limit,
                chunk,
                skip_through,
                range,
            } => {
                self.spawn_call(shard_span(&shard), async move {
                    let call =
                        k.get_records(&shard, &iterator, limit, range, skip_through.as_ref());
                    match with_deadline(&*rt, deadline(&rt), call).await {
                        Some(Ok((data, payloads, next))) => {
                            facade::counter("kinesin_records_read_total")
                                .increment(payloads.len() as u64);
                            Report::WithPayload {
                                chunk,
                                payloads,
                                input: Input::Records {
                                    op,
                                    result: Ok((data, next)),
                                },
                            }
                        }
                        Some(Err(e)) => Report::Input(Input::Records {
                            op,
                            result: Err(log(e)),
                        }),
                        None => Report::Input(Input::Records {
                            op,
                            result: Err(timed_out("Kinesis GetRecords")),
                        }),
                    }
                });
            }
            Action::ReadLeases { op, stream } => {
                self.spawn_call(tracing::Span::current(), async move {
                    let call = store.read_leases(&stream);
                    let (result, bad) = match with_deadline(&*rt, deadline(&rt), call).await {
                        Some(Ok(rows)) => (Ok(rows.rows), rows.bad),
                        Some(Err(e)) => (Err(store_class(e)), Vec::new()),
                        None => (Err(timed_out("lease table Query")), Vec::new()),
                    };
                    Report::WithBadRows {
                        input: Input::Leases { op, result },
                        partition: Some(stream),
                        bad,
                    }
                });
            }
            Action::WriteLease { op, write } => {
                facade::counter("kinesin_lease_writes_total").increment(1);
                self.metrics.lease_write(op, &write);
                self.spawn_call(tracing::Span::current(), async move {
                    let call = store.write_lease_returning(&write);
                    let (result, row) = match with_deadline(&*rt, deadline(&rt), call).await {
                        Some(Ok(row)) => (Ok(()), row.map(Box::new)),
                        Some(Err(e)) => (Err(store_class(e)), None),
                        // Sent, no answer: it may have applied.
                        None => (Err(timed_out("lease write")), None),
                    };
                    Report::Input(Input::LeaseWritten { op, result, row })
                });
            }
            Action::ReadHeartbeats { op } => {
                self.spawn_call(tracing::Span::current(), async move {
                    let call = store.read_heartbeats();
                    let (result, bad) = match with_deadline(&*rt, deadline(&rt), call).await {
                        Some(Ok(rows)) => (Ok(rows.rows), rows.bad),
                        Some(Err(e)) => (Err(store_class(e)), Vec::new()),
                        None => (Err(timed_out("heartbeat Query")), Vec::new()),
                    };
                    Report::WithBadRows {
                        input: Input::Heartbeats { op, result },
                        partition: None,
                        bad,
                    }
                });
            }
            Action::WriteHeartbeat { op, row } => {
                facade::counter("kinesin_lease_writes_total").increment(1);
                self.spawn_call(tracing::Span::current(), async move {
                    let call = store.write_heartbeat(&row);
                    let result = match with_deadline(&*rt, deadline(&rt), call).await {
                        Some(r) => r.map_err(store_class),
                        None => Err(timed_out("heartbeat write")),
                    };
                    Report::Input(Input::HeartbeatWritten { op, result })
                });
            }
            Action::DeleteLease { op, shard, token } => {
                self.spawn_call(tracing::Span::current(), async move {
                    let call = store.delete_lease(&shard, token);
                    let result = match with_deadline(&*rt, deadline(&rt), call).await {
                        Some(r) => r.map_err(store_class),
                        None => Err(timed_out("lease delete")),
                    };
                    Report::Input(Input::LeaseDeleted { op, result })
                });
            }
            Action::DeleteHeartbeat { op, owner, beat } => {
                self.spawn_call(tracing::Span::current(), async move {
                    let call = store.delete_heartbeat(&owner, beat);
                    let result = match with_deadline(&*rt, deadline(&rt), call).await {
                        Some(r) => r.map_err(store_class),
                        None => Err(timed_out("heartbeat delete")),
                    };
                    Report::Input(Input::HeartbeatDeleted { op, result })
                });
            }
        }
    }
}

fn store_class(e: crate::StoreError) -> kinesin_core::io::ErrorClass {
    match e.class() {
        kinesin_core::io::ErrorClass::ConditionalFailed => debug!("{e}"),
        _ => warn!("{e}"),
    }
    e.class()
}

fn shard_span(shard: &ShardRef) -> tracing::Span {
    tracing::info_span!(
        "shard",
        stream = kinesin_core::ids::stream_short(&shard.stream),
        shard = shard.shard.as_str()
    )
}

/// One SubscribeToShard: subscribe, then read exactly one event per credit.
/// Ends when the driver drops the credit sender (Cancel), on an error, or
/// at the end of the stream.
#[allow(clippy::too_many_arguments)]
async fn subscription_task<R: Runtime>(
    rt: Arc<R>,
    kinesis: Kinesis,
    timeout: Duration,
    sub: SubId,
    shard: ShardRef,
    consumer_arn: String,
    position: kinesin_core::sequence::StartPosition,
    range: HashRange,
    credits: async_channel::Receiver<ChunkId>,
    reports: async_channel::Sender<Report>,
) {
    let error = |e: KinesisError| {
        match e.class {
            kinesin_core::io::ErrorClass::ResourceInUse => debug!("{e}"),
            _ => warn!("{e}"),
        }
        Report::Input(Input::SubscriptionError {
            sub,
            class: e.class,
        })
    };
    let call = kinesis.subscribe(&shard, &consumer_arn, &position, range);
    let deadline: Instant = rt.now() + timeout;
    let mut subscription = match with_deadline(&*rt, deadline, call).await {
        Some(Ok(s)) => s,
        Some(Err(e)) => {
            let _ = reports.send(error(e)).await;
            return;
        }
        None => {
            warn!("SubscribeToShard timed out after {timeout:?}");
            let _ = reports
                .send(Report::Input(Input::SubscriptionError {
                    sub,
                    class: kinesin_core::io::ErrorClass::unknown_outcome(false),
                }))
                .await;
            return;
        }
    };
    let mut queued: std::collections::VecDeque<ChunkId> = Default::default();
    let mut credits = pin!(credits);
    loop {
        let chunk = match queued.pop_front() {
            Some(c) => c,
            None => match poll_fn(|cx| credits.as_mut().poll_next(cx)).await {
                Some(c) => c,
                None => return,
            },
        };
        // Read one event; stop early if cancelled meanwhile.
        let event = {
            let mut next = pin!(subscription.next_event());
            poll_fn(|cx| {
                if let Poll::Ready(r) = next.as_mut().poll(cx) {
                    return Poll::Ready(Some(r));
                }
                loop {
                    match credits.as_mut().poll_next(cx) {
                        Poll::Ready(Some(extra)) => queued.push_back(extra),
                        Poll::Ready(None) => return Poll::Ready(None),
                        Poll::Pending => return Poll::Pending,
                    }
                }
            })
            .await
        };
        let report = match event {
            None => return,
            Some(Ok(Some((data, payloads)))) => {
                facade::counter("kinesin_records_read_total").increment(payloads.len() as u64);
                Report::WithPayload {
                    chunk,
                    payloads,
                    input: Input::SubscriptionEvent { sub, chunk, data },
                }
            }
            Some(Ok(None)) => {
                let _ = reports
                    .send(Report::Input(Input::SubscriptionEnded { sub }))
                    .await;
                return;
            }
            Some(Err(e)) => {
                let _ = reports.send(error(e)).await;
                return;
            }
        };
        if reports.send(report).await.is_err() {
            return;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;
    use kinesin_core::sequence::{ExtSeq, SeqNum};

    fn chunk(n: u32) -> ChunkPayloads {
        ChunkPayloads::new(
            (1..=n)
                .map(|i| {
                    let seq = SeqNum::parse(&i.to_string()).expect("digits");
                    Record::new(Bytes::from(vec![i as u8]), "k", ExtSeq::new(seq, 0), 0)
                })
                .collect(),
        )
    }

    fn seqs(records: &[Record]) -> Vec<String> {
        records
            .iter()
            .map(|r| r.sequence_number().as_str().to_owned())
            .collect()
    }

    #[test]
    fn batches_cut_in_order_take_their_own_records_and_skipped_ones_are_dropped() {
        let mut c = chunk(6);
        assert_eq!(seqs(&c.take(0..2).expect("first")), ["1", "2"]);
        // Records 2..3 were skipped by the core (already delivered).
        assert_eq!(seqs(&c.take(3..5).expect("after a skip")), ["4", "5"]);
        assert_eq!(seqs(&c.take(5..9).expect("cut at the end")), ["6"]);
    }

    /// A driver (not running) with a local store in a fresh directory.
    fn idle_driver(
        test: &str,
    ) -> (
        Driver<crate::runtime::IdleRuntime>,
        DriverHandle,
        std::path::PathBuf,
    ) {
        use kinesin_core::config::{Config, Retrieval};
        use kinesin_core::ids::Owner;
        let dir = std::env::temp_dir().join(format!(
            "kinesin-driver-{test}-{}-{:?}",
            std::process::id(),
            Instant::now()
        ));
        let store = crate::local::LocalLeaseStore::open(&dir).expect("local store");
        let config = Config::new(
            vec![StreamId::new("arn:aws:kinesis:us-east-1:1:stream/s")],
            Owner::new("w", 1),
            Retrieval::polling(),
        );
        let worker = Worker::new(config, Instant::now(), 0).expect("valid config");
        let sdk = aws_sdk_kinesis::Config::builder()
            .behavior_version(aws_sdk_kinesis::config::BehaviorVersion::latest())
            .region(aws_types::region::Region::new("us-east-1"))
            .build();
        let kinesis = Kinesis::new(aws_sdk_kinesis::Client::from_conf(sdk));
        let (driver, handle) = Driver::new(
            Arc::new(crate::runtime::IdleRuntime),
            worker,
            kinesis,
            Arc::new(store),
            DriverOptions::default(),
        );
        (driver, handle, dir)
    }

    #[test]
    fn a_non_transient_failure_of_the_core_fails_health_until_it_is_healthy_again() {
        use crate::metrics::Health;
        use kinesin_core::health::{Health as Core, Service};
        use kinesin_core::io::ErrorClass;
        let (mut driver, handle, dir) = idle_driver("health");
        let since = Instant::now() - Duration::from_secs(75);
        driver.handle_event(Event::Health(Core::Failing {
            service: Service::Kinesis,
            class: ErrorClass::AccessDenied,
            since,
        }));
        match handle.metrics().health() {
            Health::Failing(why) => {
                assert!(why.contains("Kinesis"), "{why}");
                assert!(why.contains("AccessDenied"), "{why}");
                assert!(why.contains("credentials"), "{why}");
                assert!(why.contains("for 75 s"), "{why}");
            }
            other => panic!("{other:?}"),
        }
        let mut text = String::new();
        handle.metrics().render(&mut text);
        assert!(text.contains("\nkinesin_healthy 0\n"), "{text}");
        // The batch stream hears it too.
        driver.flush_outbox();
        match handle.deliveries().try_recv() {
            Ok(Deliveries::One(Err(DriverError::Unhealthy(m)))) => {
                assert!(m.contains("Kinesis"), "{m}")
            }
            other => panic!("{other:?}"),
        }
        driver.handle_event(Event::Health(Core::Healthy));
        assert!(
            !matches!(handle.metrics().health(), Health::Failing(_)),
            "{:?}",
            handle.metrics().health()
        );
        drop(driver);
        drop(handle);
        let _ = std::fs::remove_dir_all(dir);
    }

    #[test]
    fn a_range_already_handed_out_is_refused_not_delivered_twice() {
        let mut c = chunk(4);
        assert_eq!(c.take(0..3).expect("first").len(), 3);
        assert!(c.take(2..4).is_none());
        // What is left is still there for the next range.
        assert_eq!(seqs(&c.take(3..4).expect("rest")), ["4"]);
    }
}

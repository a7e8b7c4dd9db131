//! The public consumer API, written once for every runtime.
//!
//! Models: what an application configures ([`ConsumerBuilder`]) and what it
//! holds while consuming ([`Consumer`]: a stream of [`Batch`]es and a
//! graceful [`Consumer::shutdown`]). A runtime crate names the runtime:
//! `kinesin_tokio::Consumer` is `Consumer<TokioRuntime>`.
//!
//! Rules encoded: invalid configuration is an [`Error::Config`] naming the
//! field (checked before any network call); every stream is resolved to its
//! ARN first, and a missing one is [`Error::StreamNotFound`]; a lease table
//! that does not exist is an error unless `.create_lease_table(true)`;
//! dropping a [`Consumer`] without `shutdown` starts a graceful shutdown
//! (final checkpoints, leases released) without waiting for it;
//! [`Consumer::abort`] stops like a crash (leases expire after the failover
//! time and are taken by other workers).

use std::marker::PhantomData;
use std::path::PathBuf;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use aws_types::SdkConfig;
use futures_core::Stream;
use kinesin_core::config::{Batching, ConfigError, EfoConsumer, Retrieval, StartFrom};
use kinesin_core::ids::{Owner, ShardId, ShardRef, StreamId};
use kinesin_core::io::ErrorClass;
use kinesin_core::table::LeaseRow;
use kinesin_core::{Config, Worker};

use crate::driver::{
    Batch, DeadLetter, Deliveries, Delivery, Driver, DriverError, DriverHandle, DriverOptions,
};
use crate::error::KinesisError;
use crate::kinesis::Kinesis;
use crate::lease_store::{LeaseStore, StoreError};
use crate::local::{LocalLeaseStore, LocalStoreError};
use crate::runtime::{with_deadline, Runtime};
#[cfg(feature = "dynamodb")]
use crate::DynamoLeaseStore;

/// Why a consumer could not be built or stopped.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A configuration value that cannot work; names the field.
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// A configured stream does not exist (in this account and region).
    #[error(
        "stream {stream:?} does not exist ({message}): create it, or fix `streams` (and the \
         region / endpoint the AWS config points at)"
    )]
    StreamNotFound {
        /// The stream as configured.
        stream: String,
        /// What Kinesis said.
        message: String,
    },
    /// The lease table does not exist and was not to be created.
    #[error(
        "lease table {table:?} does not exist: create it, or call `.create_lease_table(true)` \
         (dynamodb.create)"
    )]
    LeaseTableMissing {
        /// The table name.
        table: String,
    },
    /// The lease table holds rows of an earlier stream of the same name:
    /// the stream was deleted and recreated (it keeps its ARN), and the old
    /// rows' checkpoints (`SHARD_END` on `shardId-000000000000`, sequence
    /// numbers of the old stream) would keep the new stream's shards from
    /// being read.
    #[error(
        "the lease table holds {rows} lease rows of stream {stream:?} created before the stream \
         itself (created at unix ms {stream_created_ms}; oldest row at {oldest_row_ms}): the \
         stream was deleted and recreated under the same name, and the old rows would keep the \
         new stream's shards unread. Delete the rows whose `stream` is {stream:?} and whose `key` \
         starts with `shard#` (or use a new lease table), then start again"
    )]
    StaleLeases {
        /// The stream ARN.
        stream: String,
        /// How many rows predate the stream.
        rows: usize,
        /// The stream's creation time (unix ms).
        stream_created_ms: u64,
        /// The oldest such row's `created_ms`.
        oldest_row_ms: u64,
    },
    /// A call made while building got no answer within the call timeout
    /// (an unreachable or black-holed endpoint).
    #[error(
        "{operation} got no answer within {after:?}: check the endpoint, the network and the \
         region the AWS config points at (`call_timeout` sets the deadline)"
    )]
    Timeout {
        /// The call.
        operation: &'static str,
        /// The deadline it missed.
        after: Duration,
    },
    /// A Kinesis call failed while building.
    #[error(transparent)]
    Kinesis(#[from] KinesisError),
    /// The DynamoDB lease store failed while building.
    #[error(transparent)]
    LeaseStore(#[from] StoreError),
    /// The local lease store could not be opened.
    #[error(transparent)]
    LocalStore(#[from] LocalStoreError),
    /// The consumer stopped (reported through the batch stream).
    #[error(transparent)]
    Stopped(#[from] DriverError),
}

/// Rows are stamped with their writer's wall clock: a row up to this much
/// older than the stream is clock skew, not an earlier stream.
const STALE_ROW_SKEW_MS: u64 = 5 * 60 * 1000;

/// [`Error::StaleLeases`] when rows of `stream` were created before the
/// stream itself (by more than the clock skew allowed).
fn stale_leases(stream: &StreamId, stream_created_ms: u64, rows: &[LeaseRow]) -> Option<Error> {
    let stale: Vec<u64> = rows
        .iter()
        .map(|r| r.created_ms)
        .filter(|ms| ms.saturating_add(STALE_ROW_SKEW_MS) < stream_created_ms)
        .collect();
    let oldest_row_ms = *stale.iter().min()?;
    Some(Error::StaleLeases {
        stream: stream.as_str().to_owned(),
        rows: stale.len(),
        stream_created_ms,
        oldest_row_ms,
    })
}

/// A change to the core configuration, applied at build.
type Tweak = Box<dyn FnOnce(&mut Config) + Send>;

enum LeaseChoice {
    Dynamo { table: String },
    Local(PathBuf),
}

/// Configures a [`Consumer`]. Start with `Consumer::builder()`.
///
/// Every setting has a default but the stream and the lease store;
/// [`ConsumerBuilder::build`] checks them all and names the field at fault.
///
/// ```
/// use std::time::Duration;
/// use kinesin_aws::{Batching, Consumer, ConsumerBuilder, Runtime};
///
/// /// One process, leases and checkpoints in a local directory, polling
/// /// from the newest records, batches of at most 100 records or 1 MiB,
/// /// a partial batch flushed after 200 ms.
/// fn local<R: Runtime + Default>() -> ConsumerBuilder<R> {
///     Consumer::<R>::builder()
///         .stream("arn:aws:kinesis:eu-west-1:123456789012:stream/orders")
///         .polling()
///         .local_store("/var/lib/orders-consumer")
///         .start_from_latest()
///         .batching(Batching {
///             count: 100,
///             byte_size: 1 << 20,
///             period: Some(Duration::from_millis(200)),
///         })
///         .commit_period(Duration::from_secs(5))
///         .max_pending_records(50_000)
/// }
/// ```
pub struct ConsumerBuilder<R> {
    streams: Vec<String>,
    explicit: Vec<(String, String)>,
    retrieval: Vec<(&'static str, Retrieval)>,
    lease: Vec<LeaseChoice>,
    create_table: bool,
    table_capacity: Option<(u64, u64)>,
    start_from: Option<StartFrom>,
    worker_id: Option<String>,
    tweaks: Vec<Tweak>,
    options: DriverOptions,
    kinesis_client: Option<aws_sdk_kinesis::Client>,
    #[cfg(feature = "dynamodb")]
    dynamodb_client: Option<aws_sdk_dynamodb::Client>,
    list_page_limit: Option<i32>,
    _runtime: PhantomData<fn() -> R>,
}

impl<R> std::fmt::Debug for ConsumerBuilder<R> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ConsumerBuilder")
            .field("streams", &self.streams)
            .field("worker_id", &self.worker_id)
            .finish_non_exhaustive()
    }
}

impl<R: Runtime + Default> Default for ConsumerBuilder<R> {
    fn default() -> Self {
        ConsumerBuilder {
            streams: Vec::new(),
            explicit: Vec::new(),
            retrieval: Vec::new(),
            lease: Vec::new(),
            create_table: false,
            table_capacity: None,
            start_from: None,
            worker_id: None,
            tweaks: Vec::new(),
            options: DriverOptions::default(),
            kinesis_client: None,
            #[cfg(feature = "dynamodb")]
            dynamodb_client: None,
            list_page_limit: None,
            _runtime: PhantomData,
        }
    }
}

impl<R: Runtime + Default> ConsumerBuilder<R> {
    /// Consume this stream (name or ARN). Call again for more streams.
    pub fn stream(mut self, name_or_arn: impl Into<String>) -> Self {
        self.streams.push(name_or_arn.into());
        self
    }

    /// Read this shard of this stream (name or ARN; the stream is added
    /// if missing) instead of balancing the streams' shards: Bento's
    /// explicit shards (`stream:shard`). Once one is given, the worker takes
    /// only the listed shards (each one free or expired, however many), asks
    /// no hand-off, and keeps checkpointing them as usual; a shard that
    /// ends is not followed into its children. Call again for more.
    pub fn explicit_shard(
        mut self,
        stream: impl Into<String>,
        shard_id: impl Into<String>,
    ) -> Self {
        let stream = stream.into();
        if !self.streams.contains(&stream) {
            self.streams.push(stream.clone());
        }
        self.explicit.push((stream, shard_id.into()));
        self
    }

    /// Read with GetRecords (the default).
    pub fn polling(mut self) -> Self {
        self.retrieval.push(("polling", Retrieval::polling()));
        self
    }

    /// Read with Enhanced Fan-Out through the consumer of this name
    /// (registered if missing, never deregistered).
    pub fn enhanced_fan_out(mut self, consumer_name: impl Into<String>) -> Self {
        self.retrieval.push((
            "enhanced_fan_out.consumer_name",
            Retrieval::Efo {
                consumer: EfoConsumer::Name(consumer_name.into()),
            },
        ));
        self
    }

    /// Read with Enhanced Fan-Out through an existing consumer.
    pub fn enhanced_fan_out_arn(mut self, consumer_arn: impl Into<String>) -> Self {
        self.retrieval.push((
            "enhanced_fan_out.consumer_arn",
            Retrieval::Efo {
                consumer: EfoConsumer::Arn(consumer_arn.into()),
            },
        ));
        self
    }

    /// Leases and checkpoints in this DynamoDB table (a fleet of workers).
    pub fn lease_table(mut self, table: impl Into<String>) -> Self {
        self.lease.push(LeaseChoice::Dynamo {
            table: table.into(),
        });
        self
    }

    /// Create the lease table if it is missing, and wait for it to be
    /// ACTIVE (`dynamodb.create`; default false).
    pub fn create_lease_table(mut self, create: bool) -> Self {
        self.create_table = create;
        self
    }

    /// A lease table created by [`create_lease_table`](Self::create_lease_table)
    /// is PROVISIONED with these read and write capacity units (Bento's
    /// `dynamodb.billing_mode: PROVISIONED`); default PAY_PER_REQUEST.
    pub fn lease_table_capacity(mut self, read: u64, write: u64) -> Self {
        self.table_capacity = Some((read, write));
        self
    }

    /// Leases and checkpoints in a local directory (one process only).
    pub fn local_store(mut self, dir: impl Into<PathBuf>) -> Self {
        self.lease.push(LeaseChoice::Local(dir.into()));
        self
    }

    /// Shards without a checkpoint start at the oldest record (default).
    pub fn start_from_oldest(mut self) -> Self {
        self.start_from = Some(StartFrom::Oldest);
        self
    }

    /// Shards without a checkpoint start at the lease's creation time.
    pub fn start_from_latest(mut self) -> Self {
        self.start_from = Some(StartFrom::Latest);
        self
    }

    /// Shards without a checkpoint start at this time.
    pub fn start_at(mut self, time: SystemTime) -> Self {
        let unix_ms = time
            .duration_since(UNIX_EPOCH)
            .map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
            .unwrap_or(0);
        self.start_from = Some(StartFrom::Timestamp { unix_ms });
        self
    }

    /// This worker's id (default: `$HOSTNAME-<pid>`). Restarts get a new
    /// incarnation, so reusing an id is safe.
    pub fn worker_id(mut self, id: impl Into<String>) -> Self {
        self.worker_id = Some(id.into());
        self
    }

    /// Max unacknowledged records per shard (`checkpoint_limit`, 1024).
    pub fn checkpoint_limit(self, limit: u32) -> Self {
        self.configure(move |c| c.checkpoint_limit = limit)
    }

    /// How often progressed checkpoints are written (`commit_period`, 5 s).
    pub fn commit_period(self, period: Duration) -> Self {
        self.configure(move |c| c.commit_period = period)
    }

    /// Global budget of received, unacknowledged records
    /// (`max_pending_records`, 50,000).
    pub fn max_pending_records(self, records: u64) -> Self {
        self.configure(move |c| c.pool_records = records)
    }

    /// Global budget of received, unacknowledged bytes (64 MiB).
    pub fn max_pending_bytes(self, bytes: u64) -> Self {
        self.configure(move |c| c.pool_bytes = bytes)
    }

    /// Poison records: a nacked batch is delivered again after `first`,
    /// doubled at each further nack of it up to `cap` (default: at once).
    pub fn redelivery_backoff(self, first: Duration, cap: Duration) -> Self {
        self.configure(move |c| {
            c.redelivery.backoff = first;
            c.redelivery.backoff_cap = cap;
        })
    }

    /// Poison records: a batch nacked after this many deliveries goes to
    /// [`Consumer::dead_letters`] instead of being delivered again, and the
    /// checkpoint covers it once the handler accepts it (default: no
    /// limit, redelivered for ever).
    pub fn max_deliveries(self, deliveries: u32) -> Self {
        self.configure(move |c| c.redelivery.max_deliveries = Some(deliveries))
    }

    /// Bento's `auto_replay_nacks`. `true`: a nacked batch is delivered
    /// again, for ever, after a backoff of 100 ms doubled per nack up to
    /// 5 s. `false`: a nacked batch is dropped (its records may be
    /// checkpointed) and counted in `kinesin_dead_letters_dropped_total`,
    /// with a warning (`max_deliveries(1)` with every dead letter
    /// accepted). Not calling it keeps the default: redelivered at once,
    /// for ever.
    pub fn auto_replay_nacks(mut self, replay: bool) -> Self {
        self.options.drop_dead_letters = !replay;
        self.configure(move |c| {
            if replay {
                c.redelivery.backoff = Duration::from_millis(100);
                c.redelivery.backoff_cap = Duration::from_secs(5);
                c.redelivery.max_deliveries = None;
            } else {
                c.redelivery.max_deliveries = Some(1);
            }
        })
    }

    /// Batching policy (default: one record per batch).
    pub fn batching(self, batching: Batching) -> Self {
        self.configure(move |c| c.batching = batching)
    }

    /// Failover time: a worker whose heartbeat stopped for this long loses
    /// its leases (10 s; heartbeat every third of it).
    pub fn failover_time(self, failover: Duration) -> Self {
        self.configure(move |c| {
            let mut next = c.clone().with_failover_time(failover);
            next.heartbeat_read_interval = next.heartbeat_read_interval.min(failover / 4);
            *c = next;
        })
    }

    /// Balancing pass interval (`rebalance_period`, 30 s).
    pub fn rebalance_period(self, period: Duration) -> Self {
        self.configure(move |c| c.rebalance_period = period)
    }

    /// ListShards interval (60 s).
    pub fn shard_sync_period(self, period: Duration) -> Self {
        self.configure(move |c| c.shard_sync_period = period)
    }

    /// How long shutdown waits for in-flight acks (10 s).
    pub fn shutdown_timeout(self, timeout: Duration) -> Self {
        self.configure(move |c| c.shutdown_timeout = timeout)
    }

    /// Seed of every random choice (backoff jitter).
    pub fn seed(self, seed: u64) -> Self {
        self.configure(move |c| c.seed = seed)
    }

    /// Change any other core setting (see [`kinesin_core::Config`]);
    /// applied after the settings above.
    pub fn configure(mut self, f: impl FnOnce(&mut Config) + Send + 'static) -> Self {
        self.tweaks.push(Box::new(f));
        self
    }

    /// Deadline of one AWS call (15 s).
    pub fn call_timeout(mut self, timeout: Duration) -> Self {
        self.options.call_timeout = timeout;
        self
    }

    /// Use this Kinesis client instead of one built from the `SdkConfig`
    /// (e.g. with another endpoint or HTTP client).
    pub fn kinesis_client(mut self, client: aws_sdk_kinesis::Client) -> Self {
        self.kinesis_client = Some(client);
        self
    }

    /// Use this DynamoDB client instead of one built from the `SdkConfig`.
    #[cfg(feature = "dynamodb")]
    pub fn dynamodb_client(mut self, client: aws_sdk_dynamodb::Client) -> Self {
        self.dynamodb_client = Some(client);
        self
    }

    /// ListShards page size (tests exercise pagination with it).
    pub fn list_shards_page_limit(mut self, limit: i32) -> Self {
        self.list_page_limit = Some(limit);
        self
    }

    /// Check the configuration, resolve the streams, open the lease store
    /// and start consuming.
    pub async fn build(self, sdk: &SdkConfig) -> Result<Consumer<R>, Error> {
        let bad = |field: &'static str, reason: &str| {
            Error::Config(ConfigError {
                field,
                reason: reason.to_owned(),
            })
        };
        let retrieval = match self.retrieval.as_slice() {
            [] => Retrieval::polling(),
            [(_, r)] => r.clone(),
            [(a, _), (b, _), ..] => {
                let field =
                    if a.starts_with("enhanced_fan_out") && b.starts_with("enhanced_fan_out") {
                        "enhanced_fan_out.consumer_arn"
                    } else {
                        "enhanced_fan_out.enabled"
                    };
                return Err(bad(
                    field,
                    &format!("{a} and {b} were both set; choose one way to read"),
                ));
            }
        };
        let lease = match self.lease.len() {
            0 => {
                return Err(bad(
                    "dynamodb.table",
                    "no lease store: call `.lease_table(name)` (DynamoDB, for a fleet) or \
                     `.local_store(dir)` (one process)",
                ))
            }
            1 => self.lease.into_iter().next().expect("one"),
            _ => {
                return Err(bad(
                    "dynamodb.table",
                    "more than one lease store given (lease_table / local_store); choose one",
                ))
            }
        };
        if let LeaseChoice::Dynamo { table } = &lease {
            if table.trim().is_empty() {
                return Err(bad("dynamodb.table", "must not be empty"));
            }
            if !cfg!(feature = "dynamodb") {
                return Err(bad(
                    "dynamodb.table",
                    "kinesin-aws was built without its `dynamodb` feature (the runtime crates \
                     enable it by default): enable it, or use `.local_store(dir)`",
                ));
            }
        }
        let worker_id = self.worker_id.unwrap_or_else(default_worker_id);
        let owner = Owner::new(&worker_id, incarnation());
        let streams: Vec<StreamId> = self.streams.iter().map(StreamId::new).collect();
        let mut config = Config::new(streams, owner, retrieval);
        config.seed = incarnation();
        if let Some(start) = self.start_from {
            config.start_from = start;
        }
        for tweak in self.tweaks {
            tweak(&mut config);
        }
        // Every field checked before any network call.
        config.validate()?;

        let kinesis_client = self
            .kinesis_client
            .unwrap_or_else(|| aws_sdk_kinesis::Client::new(sdk));
        let mut kinesis = Kinesis::new(kinesis_client);
        if let Some(limit) = self.list_page_limit {
            kinesis = kinesis.with_list_page_limit(limit);
        }
        // Every startup call has the same deadline as the driver's calls.
        let runtime = Arc::new(R::default());
        let after = self.options.call_timeout;
        let timeout = |operation: &'static str| Error::Timeout { operation, after };
        let mut arns = Vec::with_capacity(self.streams.len());
        let mut created = Vec::with_capacity(self.streams.len());
        for stream in &self.streams {
            // Boxed: SDK futures are large; on the heap they do not grow the
            // caller's stack (async-std runs `build` on the test thread).
            let call = Box::pin(kinesis.describe_stream(stream));
            let resolved = with_deadline(&*runtime, runtime.now() + after, call)
                .await
                .ok_or_else(|| timeout("Kinesis DescribeStreamSummary"))?;
            match resolved {
                Ok((arn, created_ms)) => {
                    arns.push(StreamId::new(arn));
                    created.push(created_ms);
                }
                Err(e) if e.class == ErrorClass::ResourceNotFound => {
                    return Err(Error::StreamNotFound {
                        stream: stream.clone(),
                        message: e.message,
                    })
                }
                Err(e) => return Err(e.into()),
            }
        }
        for (stream, shard) in &self.explicit {
            let at = self.streams.iter().position(|s| s == stream).unwrap_or(0);
            if let Some(arn) = arns.get(at) {
                config
                    .explicit_shards
                    .insert(ShardRef::new(arn.clone(), ShardId::new(shard.as_str())));
            }
        }
        config.streams = arns;

        let store: Arc<dyn LeaseStore> = match lease {
            // Refused above when the feature is off.
            #[cfg(not(feature = "dynamodb"))]
            LeaseChoice::Dynamo { .. } => {
                return Err(bad(
                    "dynamodb.table",
                    "built without the `dynamodb` feature",
                ))
            }
            #[cfg(feature = "dynamodb")]
            LeaseChoice::Dynamo { table } => {
                let client = self
                    .dynamodb_client
                    .unwrap_or_else(|| aws_sdk_dynamodb::Client::new(sdk));
                let mut store = DynamoLeaseStore::new(client, table.clone());
                if let Some((read, write)) = self.table_capacity {
                    store = store.with_provisioned_capacity(read, write);
                }
                if self.create_table {
                    // Creating waits for ACTIVE: a longer deadline.
                    let create = Box::pin(store.create_table_if_missing());
                    with_deadline(&*runtime, runtime.now() + after * 8, create)
                        .await
                        .ok_or_else(|| timeout("DynamoDB CreateTable / DescribeTable"))??;
                } else {
                    let read = Box::pin(store.read_heartbeats());
                    let read = with_deadline(&*runtime, runtime.now() + after, read)
                        .await
                        .ok_or_else(|| timeout("DynamoDB Query (lease table)"))?;
                    match read {
                        Ok(_) => {}
                        Err(e) if e.class() == ErrorClass::ResourceNotFound => {
                            return Err(Error::LeaseTableMissing { table })
                        }
                        Err(e) => return Err(e.into()),
                    }
                }
                Arc::new(store)
            }
            LeaseChoice::Local(dir) => Arc::new(LocalLeaseStore::open(dir)?),
        };
        for (stream, created_ms) in config.streams.iter().zip(&created) {
            let Some(created_ms) = *created_ms else {
                continue;
            };
            let read = Box::pin(store.read_leases(stream));
            let rows = with_deadline(&*runtime, runtime.now() + after, read)
                .await
                .ok_or_else(|| timeout("DynamoDB Query (lease table)"))??;
            if let Some(err) = stale_leases(stream, created_ms, &rows.rows) {
                return Err(err);
            }
        }

        let unix_ms = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
            .unwrap_or(0);
        let worker = Worker::new(config, runtime.now(), unix_ms)?;
        let (driver, handle) = Driver::new(runtime, worker, kinesis, store, self.options);
        driver.spawn();
        Ok(Consumer {
            handle,
            _runtime: PhantomData,
        })
    }
}

/// A running consumer: take batches with [`Consumer::batches`], stop with
/// [`Consumer::shutdown`]. Dropping it without `shutdown` starts the same
/// graceful shutdown without waiting for it (final checkpoints, leases
/// released); [`Consumer::abort`] stops at once, like a crash.
///
/// Applications name it through a runtime crate
/// (`kinesin_tokio::Consumer`, `kinesin_async_std::Consumer`); code that
/// stays generic over the runtime reads:
///
/// ```
/// use futures_lite::StreamExt;
/// use kinesin_aws::{Consumer, Error, Runtime};
///
/// async fn consume<R: Runtime + Default>(sdk: &aws_types::SdkConfig) -> Result<(), Error> {
///     let consumer = Consumer::<R>::builder()
///         .stream("orders")
///         .enhanced_fan_out("orders-app") // or .polling()
///         .lease_table("orders-leases")
///         .create_lease_table(true)
///         .build(sdk)
///         .await?; // bad configuration: an error naming the field
///     let mut batches = consumer.batches();
///     while let Some(batch) = batches.next().await {
///         let batch = batch?;
///         for record in batch.records() {
///             println!("{} {} bytes", record.partition_key(), record.data().len());
///         }
///         batch.ack(); // dropped without ack: delivered again
///     }
///     consumer.shutdown().await // final checkpoints, leases released
/// }
/// ```
#[derive(Debug)]
pub struct Consumer<R> {
    handle: DriverHandle,
    _runtime: PhantomData<fn() -> R>,
}

impl<R: Runtime + Default> Consumer<R> {
    /// A builder; see [`ConsumerBuilder`].
    pub fn builder() -> ConsumerBuilder<R> {
        ConsumerBuilder::default()
    }

    /// The delivered batches, as a `futures::Stream`. Several streams may be
    /// taken (each batch goes to one of them). Ends after shutdown.
    pub fn batches(&self) -> Batches {
        Batches {
            rx: Box::pin(self.handle.deliveries()),
            burst: std::collections::VecDeque::new(),
        }
    }

    /// Batches nacked `max_deliveries` times, for the dead-letter handler:
    /// [`DeadLetter::accept`] once stored (the checkpoint may then cover
    /// them), drop or [`DeadLetter::reject`] to have them offered again.
    /// Several streams may be taken (each dead letter goes to one). Ends
    /// after shutdown.
    pub fn dead_letters(&self) -> DeadLetters {
        DeadLetters {
            rx: Box::pin(self.handle.dead_letters()),
        }
    }

    /// Stop gracefully: read nothing new, wait for in-flight acks (up to the
    /// shutdown timeout), write final checkpoints, release every lease.
    /// Batches not yet taken from the stream are given back.
    pub async fn shutdown(self) -> Result<(), Error> {
        let done = self.handle.shutdown();
        // `()` when complete; a closed channel means the driver already
        // stopped (after a fatal error, which shut it down too).
        let _ = done.recv().await;
        Ok(())
    }

    /// Stop at once without releasing leases (what a crash does; other
    /// workers take the shards after the failover time).
    pub fn abort(self) {
        self.handle.abort();
    }

    /// This consumer's metrics: per-shard series while a lease is held
    /// (lag, records and bytes delivered and acked), per-worker counters,
    /// [`crate::Metrics::render`] for Prometheus and
    /// [`crate::Metrics::health`] for a readiness probe. Cheap to clone.
    pub fn metrics(&self) -> &crate::Metrics {
        self.handle.metrics()
    }

    /// Lease events as a `futures::Stream`: first a
    /// [`LeaseEvent::Gained`](crate::LeaseEvent::Gained) for every lease held
    /// now, then every gain (shard, fencing token, start position), loss
    /// (with its reason) and shard end, so a sink can open and close
    /// per-shard resources. Several streams may be taken; each sees every
    /// event. Ends once the consumer has shut down.
    pub fn lease_events(&self) -> crate::LeaseEvents {
        self.handle.lease_events()
    }
}

/// The stream of [`Batch`]es (see [`Consumer::batches`]).
#[derive(Debug)]
pub struct Batches {
    rx: Pin<Box<async_channel::Receiver<Deliveries>>>,
    /// The rest of the last burst received, handed out before the channel
    /// is polled again. Dropping the stream drops them: nacks, delivered
    /// again.
    burst: std::collections::VecDeque<Delivery>,
}

/// The stream of [`DeadLetter`]s (see [`Consumer::dead_letters`]).
#[derive(Debug)]
pub struct DeadLetters {
    rx: Pin<Box<async_channel::Receiver<DeadLetter>>>,
}

impl Stream for DeadLetters {
    type Item = DeadLetter;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        self.rx.as_mut().poll_next(cx)
    }
}

impl Stream for Batches {
    type Item = Result<Batch, Error>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        if let Some(d) = self.burst.pop_front() {
            return Poll::Ready(Some(d.map_err(Error::from)));
        }
        let d = match self.rx.as_mut().poll_next(cx) {
            Poll::Pending => return Poll::Pending,
            Poll::Ready(None) => return Poll::Ready(None),
            Poll::Ready(Some(Deliveries::One(d))) => d,
            Poll::Ready(Some(Deliveries::Burst(burst))) => {
                self.burst = burst.into();
                match self.burst.pop_front() {
                    Some(d) => d,
                    // Never sent empty; read on.
                    None => return self.poll_next(cx),
                }
            }
        };
        Poll::Ready(Some(d.map_err(Error::from)))
    }
}

fn default_worker_id() -> String {
    let host = std::env::var("HOSTNAME")
        .ok()
        .filter(|h| !h.is_empty())
        .or_else(|| {
            std::fs::read_to_string("/etc/hostname")
                .ok()
                .map(|h| h.trim().to_owned())
                .filter(|h| !h.is_empty())
        })
        .unwrap_or_else(|| "kinesin".to_owned());
    format!("{host}-{}", std::process::id())
}

/// Distinct per consumer started: wall-clock nanoseconds plus a process
/// counter.
fn incarnation() -> u64 {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_nanos() as u64)
        .unwrap_or(0);
    nanos.wrapping_add(COUNTER.fetch_add(1, Ordering::Relaxed))
}

#[cfg(test)]
mod tests {
    use super::*;
    use kinesin_core::ids::{ShardId, ShardRef};

    fn row(created_ms: u64) -> LeaseRow {
        let stream = StreamId::new("arn:aws:kinesis:us-east-1:1:stream/s");
        LeaseRow::new(
            ShardRef::new(stream, ShardId::new("shardId-0")),
            vec![],
            created_ms,
        )
    }

    #[test]
    fn rows_older_than_the_stream_beyond_clock_skew_are_stale() {
        let stream = StreamId::new("arn:aws:kinesis:us-east-1:1:stream/s");
        let created = 1_800_000_000_000;
        // Within the skew allowed for writers' wall clocks: the same stream.
        let skewed = [row(created - STALE_ROW_SKEW_MS), row(created + 5)];
        assert!(stale_leases(&stream, created, &skewed).is_none());
        // A day older: rows of an earlier stream of that name.
        let old = [
            row(created - 86_400_000),
            row(created - 86_400_001),
            row(created),
        ];
        match stale_leases(&stream, created, &old) {
            Some(Error::StaleLeases {
                rows,
                oldest_row_ms,
                ..
            }) => {
                assert_eq!(rows, 2);
                assert_eq!(oldest_row_ms, created - 86_400_001);
            }
            other => panic!("{other:?}"),
        }
    }

    /// Built without the `dynamodb` feature (`cargo test -p kinesin-aws
    /// --no-default-features`), `lease_table` is refused before any call,
    /// naming the feature and the alternative.
    #[cfg(not(feature = "dynamodb"))]
    #[test]
    fn lease_table_without_the_dynamodb_feature_is_refused_naming_the_feature() {
        // `build` refuses before it starts the runtime.
        let sdk = SdkConfig::builder().build();
        let built = futures_lite::future::block_on(
            Consumer::<crate::runtime::IdleRuntime>::builder()
                .stream("s")
                .lease_table("orders-leases")
                .build(&sdk),
        );
        match built {
            Err(Error::Config(e)) => {
                assert_eq!(e.field, "dynamodb.table");
                assert!(
                    e.reason.contains("built without its `dynamodb` feature"),
                    "{}",
                    e.reason
                );
                assert!(e.reason.contains(".local_store(dir)"), "{}", e.reason);
            }
            Err(other) => panic!("{other}"),
            Ok(_) => panic!("a consumer was built without a lease store"),
        }
    }

    #[test]
    fn a_burst_of_deliveries_is_handed_out_one_at_a_time_in_order_then_the_stream_ends() {
        let (tx, rx) = async_channel::unbounded();
        let fatal = |m: &str| Err(DriverError::Fatal(m.to_owned()));
        tx.try_send(Deliveries::Burst(vec![fatal("a"), fatal("b"), fatal("c")]))
            .unwrap();
        tx.try_send(Deliveries::One(fatal("d"))).unwrap();
        tx.close();
        let batches = Batches {
            rx: Box::pin(rx),
            burst: std::collections::VecDeque::new(),
        };
        let got: Vec<String> =
            futures_lite::future::block_on(futures_lite::StreamExt::collect::<Vec<_>>(batches))
                .into_iter()
                .map(|d| match d {
                    Err(e) => e.to_string(),
                    Ok(b) => panic!("unexpected batch {}", b.id()),
                })
                .collect();
        let want: Vec<String> = ["a", "b", "c", "d"]
            .iter()
            .map(|m| Error::from(DriverError::Fatal((*m).to_owned())).to_string())
            .collect();
        assert_eq!(got, want);
    }
}

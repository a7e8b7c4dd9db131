//! # kinesin-aws: the AWS side of the kinesin Kinesis consumer
//!
//! [`kinesin_core`] decides; this crate performs the I/O it asks for,
//! without depending on any async executor: its futures are plain `async`
//! code, the few executor services it needs come through the [`Runtime`]
//! trait (spawn, a reusable timer, the clock), and the AWS SDK clients it is
//! given carry the HTTP client and the sleep that a runtime crate
//! (`kinesin-tokio`, later `kinesin-async-std`) plugged in. No tokio type
//! appears in its API.
//!
//! Types to read first:
//! - [`Driver`]: the one loop that runs a core `Worker`: actions become
//!   spawned SDK calls reporting back as inputs, events become
//!   application [`Batch`]es, one timer serves `poll_timeout`.
//! - [`Consumer`] / [`ConsumerBuilder`]: the public API, generic over the
//!   runtime (`kinesin_tokio::Consumer` = `Consumer<TokioRuntime>`).
//! - [`Kinesis`]: the Kinesis calls (ListShards, GetRecords,
//!   SubscribeToShard, ...) and KPL de-aggregation into [`Record`]s.
//! - [`LeaseStore`]: read and conditionally write lease rows and heartbeat
//!   rows, with the semantics of [`kinesin_core::table::LeaseWrite::apply`];
//!   [`DynamoLeaseStore`] (a fleet; schema in [`dynamo`]) and
//!   [`LocalLeaseStore`] (one process; format in [`local`]).
//! - [`error`]: every SDK error mapped to the core's
//!   [`kinesin_core::io::ErrorClass`] in one place.
//! - [`LeaseEvents`] (lease gained, lost, shard ended) and [`Metrics`]
//!   (the registry `kinesin consume --metrics-addr` serves).
//!
//! [`Consumer`], [`ConsumerBuilder`], [`Batch`], [`LeaseEvents`],
//! [`Metrics`] and [`DynamoLeaseStore`] carry compiled examples; whole
//! programs are in `runtime-tokio/examples` and `runtime-async-std/examples`.
#![forbid(unsafe_code)]
#![warn(missing_docs)]

mod codec;
pub mod consumer;
pub mod driver;
#[cfg(feature = "dynamodb")]
pub mod dynamo;
pub mod error;
pub mod events;
mod facade;
pub mod kinesis;
pub mod lease_store;
pub mod local;
pub mod metrics;
pub mod runtime;

pub use consumer::{Batches, Consumer, ConsumerBuilder, DeadLetters, Error};
pub use driver::{Batch, DeadLetter, Deliveries, Driver, DriverError, DriverHandle, DriverOptions};
#[cfg(feature = "dynamodb")]
pub use dynamo::DynamoLeaseStore;
pub use error::KinesisError;
pub use events::{LeaseEvent, LeaseEvents, LostReason, StartPosition};
pub use kinesis::{Kinesis, Record, Subscription};
pub use lease_store::{LeaseStore, RowError, Rows, StoreError, StoreFuture};
pub use local::{LocalLeaseStore, LocalStoreError};
pub use metrics::{Health, Metrics};
pub use runtime::{AsyncTimer, Runtime, Task};

/// How records are cut into batches (the core's setting, re-exported so the
/// runtime crates and applications need not depend on `kinesin-core`).
pub use kinesin_core::config::Batching;

//! # kinesin-aws: the AWS side of the kinesin Kinesis consumer
//!
//! [`kinesin_core`] decides; this crate performs the I/O it asks for,
//! without depending on any async executor: its futures are plain `async`
//! code, and the AWS SDK clients it is given carry the HTTP client and the
//! sleep that a runtime crate (`kinesin-tokio`, `kinesin-async-std`)
//! plugged in. No tokio type appears in its API.
//!
//! What is here now: the lease stores, behind one seam.
//! - [`LeaseStore`]: read and conditionally write lease rows and heartbeat
//!   rows, with the semantics of [`kinesin_core::io::LeaseWrite::apply`],
//!   failures classified as [`kinesin_core::io::ErrorClass`].
//! - [`DynamoLeaseStore`]: the lease table on DynamoDB, for a fleet of
//!   workers (schema and conditions in [`dynamo`]).
//! - [`LocalLeaseStore`]: the table in one file in a directory, for a single
//!   process (format in [`local`]).
//!
//! The driver that runs the core's `Worker` against Kinesis
//! and a lease store comes next.
#![forbid(unsafe_code)]
#![warn(missing_docs)]

mod codec;
pub mod dynamo;
pub mod lease_store;
pub mod local;

pub use dynamo::DynamoLeaseStore;
pub use lease_store::{LeaseStore, RowError, StoreError, StoreFuture};
pub use local::{LocalLeaseStore, LocalStoreError};

//! # kinesin-tokio: consume Amazon Kinesis Data Streams on tokio
//!
//! A fleet of workers reads a stream's shards by polling (GetRecords) or
//! Enhanced Fan-Out (SubscribeToShard), with leases and checkpoints in
//! DynamoDB (or, for one process, in a local directory). Delivery is
//! at-least-once; each shard's checkpoint is the end of its longest
//! contiguously acknowledged prefix; memory is bounded by a global budget of
//! pending records and bytes.
//!
//! ```no_run
//! use futures_lite::StreamExt;
//!
//! # async fn run() -> Result<(), Box<dyn std::error::Error>> {
//! let aws_config = aws_config::load_defaults(aws_config::BehaviorVersion::latest()).await;
//! let consumer = kinesin_tokio::Consumer::builder()
//!     .stream("orders")
//!     .enhanced_fan_out("orders-app") // or .polling()
//!     .lease_table("orders-leases") // DynamoDB; or .local_store(dir) for one process
//!     .create_lease_table(true)
//!     .build(&aws_config)
//!     .await?;
//! let mut batches = consumer.batches(); // a futures::Stream of Result<Batch>
//! while let Some(batch) = batches.next().await {
//!     let batch = batch?;
//!     for record in batch.records() {
//!         println!(
//!             "{} {}/{}: {} bytes (fencing token {})",
//!             batch.shard(),
//!             record.sequence_number(),
//!             record.sub_sequence_number(),
//!             record.data().len(),
//!             batch.fencing_token(),
//!         );
//!     }
//!     batch.ack(); // dropping a batch without ack is a nack: it is delivered again
//! #   break;
//! }
//! consumer.shutdown().await?; // final checkpoints written, leases released
//! # Ok(())
//! # }
//! ```
//!
//! Everything here is [`kinesin_aws`] on the [`TokioRuntime`]: the
//! driver, the Kinesis calls and the lease stores are written once for every
//! runtime. [`Consumer::builder`] must be built inside a tokio runtime (it
//! spawns the driver on the current one). The AWS clients come from the
//! `SdkConfig` given to `build` (credentials, region and endpoints from the
//! standard chain), or from `.kinesis_client(..)` / `.dynamodb_client(..)`.
#![forbid(unsafe_code)]
#![warn(missing_docs)]

use std::fmt;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Instant;

pub use kinesin_aws::Batching;
pub use kinesin_aws::{Batch, Batches, Error, Record};
pub use kinesin_aws::{Health, LeaseEvent, LeaseEvents, LostReason, Metrics, StartPosition};

/// The consumer on tokio: see [`kinesin_aws::Consumer`].
pub type Consumer = kinesin_aws::Consumer<TokioRuntime>;

/// Its builder: see [`kinesin_aws::ConsumerBuilder`].
pub type ConsumerBuilder = kinesin_aws::ConsumerBuilder<TokioRuntime>;

/// [`kinesin_aws::Runtime`] on the current tokio runtime.
#[derive(Clone)]
pub struct TokioRuntime {
    handle: tokio::runtime::Handle,
}

impl TokioRuntime {
    /// On a given tokio runtime.
    pub fn new(handle: tokio::runtime::Handle) -> Self {
        TokioRuntime { handle }
    }
}

impl Default for TokioRuntime {
    /// On the current tokio runtime.
    ///
    /// # Panics
    /// Outside a tokio runtime.
    fn default() -> Self {
        TokioRuntime::new(tokio::runtime::Handle::current())
    }
}

impl fmt::Debug for TokioRuntime {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("TokioRuntime")
    }
}

impl kinesin_aws::Runtime for TokioRuntime {
    fn spawn(&self, task: kinesin_aws::Task) {
        self.handle.spawn(task);
    }

    fn new_timer(&self, deadline: Instant) -> Pin<Box<dyn kinesin_aws::AsyncTimer>> {
        let _guard = self.handle.enter();
        Box::pin(TokioTimer(Box::pin(tokio::time::sleep_until(
            tokio::time::Instant::from_std(deadline),
        ))))
    }

    fn now(&self) -> Instant {
        Instant::now()
    }
}

struct TokioTimer(Pin<Box<tokio::time::Sleep>>);

impl fmt::Debug for TokioTimer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_tuple("TokioTimer")
            .field(&self.0.deadline())
            .finish()
    }
}

impl kinesin_aws::AsyncTimer for TokioTimer {
    fn reset(mut self: Pin<&mut Self>, deadline: Instant) {
        self.0
            .as_mut()
            .reset(tokio::time::Instant::from_std(deadline));
    }

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        std::future::Future::poll(self.0.as_mut(), cx)
    }
}

//! kinesin on async-std, with no tokio runtime anywhere in the process.
//!
//! **async-std is discontinued upstream** (RUSTSEC-2025-0052; its own
//! changelog, from 1.13.1, recommends moving to [smol]). This crate is
//! therefore built on the async-io primitives that async-std and smol
//! share: async-io timers and TCP streams, one async-io reactor per
//! process. Everything here also runs under `smol::block_on` (the test
//! suite checks it), so moving an application from async-std to smol
//! changes nothing on kinesin's side. Tasks are spawned with
//! `async_std::task::spawn` (async-global-executor, itself on
//! async-executor and async-io), which works under either.
//!
//! What is here:
//! - [`Consumer`] / [`ConsumerBuilder`]: the same public API as
//!   kinesin-tokio ([`kinesin_aws::Consumer`] on [`AsyncStdRuntime`]).
//! - [`AsyncStdRuntime`]: the driver's [`kinesin_aws::Runtime`]
//!   (spawn, reusable timer, monotonic clock).
//! - [`AsyncStdHttpClient`]: an HTTP/1.1 + HTTP/2 client for the AWS SDK
//!   (hyper over async-io TCP and rustls, ALPN `h2`), the piece that
//!   normally drags a tokio runtime in. See [`http`].
//! - [`AsyncIoSleep`]: the SDK's sleep on async-io timers.
//! - [`config_loader`] / [`sdk_config`]: an [`aws_config::SdkConfig`]
//!   wired with all three seams the SDK needs (HTTP client, sleep, time
//!   source).
//!
//! ```no_run
//! use futures_lite::StreamExt;
//!
//! # async fn run() -> Result<(), Box<dyn std::error::Error>> {
//! // The SDK configuration from the environment, on this crate's HTTP client.
//! let aws_config = kinesin_async_std::sdk_config().await;
//! let consumer = kinesin_async_std::Consumer::builder()
//!     .stream("orders")
//!     .enhanced_fan_out("orders-app") // or .polling()
//!     .lease_table("orders-leases") // DynamoDB; or .local_store(dir) for one process
//!     .build(&aws_config)
//!     .await?;
//! let mut batches = consumer.batches();
//! while let Some(batch) = batches.next().await {
//!     let batch = batch?;
//!     println!("{}: {} records", batch.shard(), batch.records().len());
//!     batch.ack(); // dropping a batch without ack is a nack
//! #   break;
//! }
//! consumer.shutdown().await?;
//! # Ok(())
//! # }
//! ```
//!
//! The `SdkConfig` given to `build` must come from [`sdk_config`] or
//! [`config_loader`] (or carry this crate's HTTP client and sleep some
//! other way): one from `aws_config::load_defaults` with its default
//! features needs a tokio runtime.
//!
//! # The AWS SDK without tokio
//!
//! The SDK crates must be used with `default-features = false` (plus
//! `behavior-version-latest`): `rt-tokio`, `default-https-client`,
//! `rustls`, `client-hyper` and `credentials-process` each need a tokio
//! runtime at run time (the first request panics with "there is no reactor
//! running"). tokio still appears in `cargo tree` as a library (its `sync`
//! and `io-util` parts, through the SDK, hyper and h2); no tokio runtime
//! is ever created.
//!
//! Credentials and region come from aws-config's default chains, which run
//! on the seams wired here: environment variables, the shared config and
//! credentials files (profiles with static keys or role assumption), web
//! identity tokens, the ECS container endpoint and IMDS (the last three
//! over [`AsyncStdHttpClient`]; only the first two are tested here). Not
//! available: `credential_process` (aws-config's `credentials-process`
//! feature runs the process on tokio) and SSO / IAM Identity Center
//! profiles (aws-config's `sso` feature is off). Give an explicit
//! `credentials_provider` to [`config_loader`] when neither chain fits.
//!
//! [smol]: https://docs.rs/smol

#![forbid(unsafe_code)]
#![warn(missing_docs)]

pub mod http;
mod runtime;

pub use http::{AsyncStdHttpClient, ConnectionStats, HttpClientBuilder, HttpClientError};
pub use kinesin_aws::Batching;
pub use kinesin_aws::{Batch, Batches, Error, Record};
pub use kinesin_aws::{Health, LeaseEvent, LeaseEvents, LostReason, Metrics, StartPosition};
pub use runtime::{AsyncIoSleep, AsyncStdRuntime};

/// The consumer on async-std: see [`kinesin_aws::Consumer`].
pub type Consumer = kinesin_aws::Consumer<AsyncStdRuntime>;

/// Its builder: see [`kinesin_aws::ConsumerBuilder`].
pub type ConsumerBuilder = kinesin_aws::ConsumerBuilder<AsyncStdRuntime>;

use aws_config::{BehaviorVersion, ConfigLoader, SdkConfig};
use aws_smithy_async::time::SystemTimeSource;

/// aws-config's loader (latest behaviour version) with `http` as the HTTP
/// client, [`AsyncIoSleep`] as sleep and the system clock as time source.
/// Chain `.region(..)`, `.endpoint_url(..)`, `.credentials_provider(..)`
/// as usual, then `.load().await`.
pub fn config_loader(http: AsyncStdHttpClient) -> ConfigLoader {
    aws_config::defaults(BehaviorVersion::latest())
        .http_client(http)
        .sleep_impl(AsyncIoSleep)
        .time_source(SystemTimeSource::new())
}

/// The SDK configuration from the environment (region, credentials,
/// `AWS_ENDPOINT_URL_*`), on [`AsyncStdHttpClient::new`]: see
/// [`config_loader`].
pub async fn sdk_config() -> SdkConfig {
    config_loader(AsyncStdHttpClient::new()).load().await
}

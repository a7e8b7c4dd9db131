//! Helpers for the async-std tests: the emulator environment (never
//! skipped: a missing variable fails the test with what to run), fresh
//! names, the no-tokio check, Kinesis stream set-up.
#![allow(dead_code)]

use std::future::Future;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{bail, Context, Result};
use aws_config::SdkConfig;
use aws_sdk_kinesis::types::StreamStatus;
use kinesin_async_std::{config_loader, AsyncStdHttpClient};

/// The value of an emulator variable, or a panic saying how to set it up.
pub fn emulator_env(var: &str) -> String {
    match std::env::var(var) {
        Ok(value) if !value.is_empty() => value,
        _ => panic!(
            "{var} is not set: these tests need the local emulators. Run \
             `scripts/emulators.sh start` and `eval \"$(scripts/emulators.sh env)\"`, then \
             run the tests again from that shell."
        ),
    }
}

/// Fails if a tokio runtime is reachable from here: the whole point of
/// this crate is that none exists.
pub fn assert_no_tokio() {
    assert!(
        tokio::runtime::Handle::try_current().is_err(),
        "a tokio runtime is running: kinesin-async-std must not need one"
    );
}

/// The SDK configuration for the plain-HTTP emulators (endpoints,
/// region and credentials from the environment).
pub async fn plain_sdk() -> SdkConfig {
    emulator_env("AWS_ENDPOINT_URL_KINESIS");
    emulator_env("AWS_ENDPOINT_URL_DYNAMODB");
    config_loader(AsyncStdHttpClient::new()).load().await
}

/// A Kinesis client on the emulator's TLS port (HTTP/2 through ALPN),
/// trusting the emulator's CA, with `h2_streams` streams per connection;
/// and its HTTP client (for its connection counts).
pub async fn tls_kinesis(h2_streams: usize) -> (aws_sdk_kinesis::Client, AsyncStdHttpClient) {
    let endpoint = emulator_env("KINESIN_TLS_ENDPOINT");
    let ca = emulator_env("KINESIN_TEST_CA");
    let http = AsyncStdHttpClient::builder()
        .add_root_certificates_pem_file(&ca)
        .expect("the emulator CA loads")
        .h2_streams_per_connection(h2_streams)
        .build()
        .expect("client builds");
    let sdk = config_loader(http.clone()).load().await;
    let config = aws_sdk_kinesis::config::Builder::from(&sdk)
        .endpoint_url(endpoint)
        .build();
    (aws_sdk_kinesis::Client::from_conf(config), http)
}

/// A name no other test (or earlier run) used.
pub fn unique(prefix: &str) -> String {
    static N: AtomicU64 = AtomicU64::new(0);
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or(0);
    format!(
        "kas-{prefix}-{}-{nanos}-{}",
        std::process::id(),
        N.fetch_add(1, Ordering::Relaxed)
    )
}

/// `future`, or an error naming `what` after `limit`.
pub async fn within<T>(limit: Duration, what: &str, future: impl Future<Output = T>) -> Result<T> {
    futures_lite::future::or(async { Ok(future.await) }, async {
        async_io::Timer::after(limit).await;
        bail!("{what}: not done within {limit:?}")
    })
    .await
}

/// Run `body` on a fresh stream of `shards` shards named after `prefix`
/// (ACTIVE, its ARN given), then delete the stream and its consumers
/// whatever the outcome: the emulator caps the shards of all streams
/// together (`SHARD_LIMIT`), and other suites share it.
pub async fn with_stream<T, F, Fut>(
    k: &aws_sdk_kinesis::Client,
    prefix: &str,
    shards: i32,
    body: F,
) -> Result<T>
where
    F: FnOnce(String, String) -> Fut,
    Fut: Future<Output = Result<T>>,
{
    let name = unique(prefix);
    let result = match create_stream(k, &name, shards).await {
        Ok(arn) => body(name.clone(), arn).await,
        Err(err) => Err(err),
    };
    let _ = k
        .delete_stream()
        .stream_name(&name)
        .enforce_consumer_deletion(true)
        .send()
        .await;
    result
}

/// Create a stream and wait until it is ACTIVE; returns its ARN.
pub async fn create_stream(k: &aws_sdk_kinesis::Client, name: &str, shards: i32) -> Result<String> {
    k.create_stream()
        .stream_name(name)
        .shard_count(shards)
        .send()
        .await
        .with_context(|| format!("CreateStream {name}"))?;
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let summary = k
            .describe_stream_summary()
            .stream_name(name)
            .send()
            .await
            .with_context(|| format!("DescribeStreamSummary {name}"))?;
        let summary = summary.stream_description_summary().context("no summary")?;
        if summary.stream_status() == &StreamStatus::Active {
            return Ok(summary.stream_arn().to_owned());
        }
        if Instant::now() > deadline {
            bail!("stream {name} not ACTIVE after 20 s");
        }
        async_io::Timer::after(Duration::from_millis(50)).await;
    }
}

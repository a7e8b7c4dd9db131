//! Helpers shared by the conformance suite and the CPU measurement,
//! written once for every runtime: [`TestRuntime`] says how a runtime
//! runs a test (its `block_on`, its SDK configuration for the emulators,
//! its TLS HTTP client, what "running on it and nothing else" means);
//! [`Env`] is one test's world (SDK clients, fresh streams and tables
//! deleted at the end, timers through the kinesin `Runtime` under test);
//! [`run`] runs a scenario on a runtime.
//!
//! Nothing here names tokio outside [`Tokio`]: timers and timeouts go
//! through `kinesin_aws::runtime` on the runtime under test, so an
//! accidental tokio call in a scenario or helper makes the async-std
//! variant fail ("there is no reactor running").
#![allow(dead_code)]

use std::collections::{BTreeMap, BTreeSet};
use std::future::Future;
use std::panic::AssertUnwindSafe;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{bail, ensure, Context, Result};
use aws_sdk_kinesis::config::SharedHttpClient;
use aws_sdk_kinesis::primitives::Blob;
use aws_sdk_kinesis::types::{PutRecordsRequestEntry, StreamStatus};
use aws_types::SdkConfig;
use futures_lite::{FutureExt, StreamExt};
use kinesin_aws::runtime::{sleep_until, with_deadline};
use kinesin_aws::{Batches, ConsumerBuilder, Runtime};
use kinesin_core::ids::StreamId;
use kinesin_core::table::LeaseRow;

/// How one runtime runs the suite.
pub trait TestRuntime: Sized + 'static {
    /// The kinesin runtime the consumers run on.
    type Runtime: Runtime + Default;
    /// For messages.
    const NAME: &'static str;

    /// Run `future` to completion on this runtime, from a plain thread.
    fn block_on<T>(future: impl Future<Output = T>) -> T;

    /// The SDK configuration for the plain-HTTP emulators, from the
    /// environment, on this runtime's HTTP client and sleep.
    fn sdk_config() -> impl Future<Output = SdkConfig>;

    /// This runtime's HTTPS client (ALPN h2) trusting the CA in this PEM file.
    fn tls_http_client(ca_pem_file: &str) -> Result<SharedHttpClient>;

    /// Panics unless this runtime, and only it, runs the test (called at the
    /// start and at the end of every scenario).
    fn check_runtime() -> impl Future<Output = ()>;
}

/// The suite on kinesin-tokio: a 2-worker multi-thread runtime per test
/// (as `#[tokio::test(flavor = "multi_thread", worker_threads = 2)]`), the
/// SDK's default HTTP client.
pub struct Tokio;

impl TestRuntime for Tokio {
    type Runtime = kinesin_tokio::TokioRuntime;
    const NAME: &'static str = "tokio";

    fn block_on<T>(future: impl Future<Output = T>) -> T {
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .expect("a tokio runtime")
            .block_on(future)
    }

    async fn sdk_config() -> SdkConfig {
        check_emulator_env();
        aws_config::defaults(aws_config::BehaviorVersion::latest())
            .load()
            .await
    }

    fn tls_http_client(ca_pem_file: &str) -> Result<SharedHttpClient> {
        use aws_smithy_http_client::tls::{
            self, rustls_provider::CryptoMode, TlsContext, TrustStore,
        };
        let ca = std::fs::read(ca_pem_file).with_context(|| format!("reading {ca_pem_file}"))?;
        Ok(aws_smithy_http_client::Builder::new()
            .tls_provider(tls::Provider::Rustls(CryptoMode::AwsLc))
            .tls_context(
                TlsContext::builder()
                    .with_trust_store(TrustStore::empty().with_pem_certificate(ca.as_slice()))
                    .build()?,
            )
            .build_https())
    }

    async fn check_runtime() {
        assert!(
            tokio::runtime::Handle::try_current().is_ok(),
            "the tokio variant runs inside a tokio runtime"
        );
    }
}

/// The suite on kinesin-async-std: `async_std::task::block_on`, the
/// crate's own HTTP client and sleep, and no tokio runtime anywhere in the
/// process (this variant lives in its own test binary).
pub struct AsyncStd;

impl TestRuntime for AsyncStd {
    type Runtime = kinesin_async_std::AsyncStdRuntime;
    const NAME: &'static str = "async-std";

    fn block_on<T>(future: impl Future<Output = T>) -> T {
        assert_no_tokio();
        async_std::task::block_on(future)
    }

    async fn sdk_config() -> SdkConfig {
        check_emulator_env();
        kinesin_async_std::sdk_config().await
    }

    fn tls_http_client(ca_pem_file: &str) -> Result<SharedHttpClient> {
        Ok(kinesin_async_std::AsyncStdHttpClient::builder()
            .add_root_certificates_pem_file(ca_pem_file)?
            .build()?
            .into_shared())
    }

    async fn check_runtime() {
        // On the test's thread (inside async_std::task::block_on) ...
        assert_no_tokio();
        // ... in a task spawned through the runtime the consumer uses ...
        let (tx, rx) = async_std::channel::bounded(1);
        kinesin_async_std::AsyncStdRuntime.spawn(Box::pin(async move {
            let _ = tx
                .send(tokio::runtime::Handle::try_current().is_err())
                .await;
        }));
        assert!(
            rx.recv().await.expect("the spawned task reports"),
            "a tokio runtime is reachable from an async-std task"
        );
        // ... and in the whole process: no tokio worker or blocking thread.
        let tokio_threads = tokio_threads();
        assert!(
            tokio_threads.is_empty(),
            "tokio threads in an async-std test process: {tokio_threads:?}"
        );
    }
}

/// Fails if a tokio runtime is reachable from this thread.
pub fn assert_no_tokio() {
    assert!(
        tokio::runtime::Handle::try_current().is_err(),
        "a tokio runtime is running: the async-std variant must not need one"
    );
}

/// Threads of this process named as tokio names its worker and blocking
/// threads (`comm`, 15 characters: "tokio-rt-worker" in tokio 1.54,
/// "tokio-runtime-w" before; test threads are named after Rust
/// identifiers, which have no '-').
pub fn tokio_threads() -> Vec<String> {
    let Ok(tasks) = std::fs::read_dir("/proc/self/task") else {
        return Vec::new();
    };
    tasks
        .filter_map(|t| std::fs::read_to_string(t.ok()?.path().join("comm")).ok())
        .map(|comm| comm.trim().to_owned())
        .filter(|comm| comm.starts_with("tokio-"))
        .collect()
}

/// Panics (telling how to start them) when the emulators' variables are
/// missing: these tests never skip.
fn check_emulator_env() {
    for var in ["AWS_ENDPOINT_URL_KINESIS", "AWS_ENDPOINT_URL_DYNAMODB"] {
        if std::env::var_os(var).is_none() {
            panic!(
                "{var} is not set: the end-to-end tests need the local emulators. Run \
                 `scripts/emulators.sh start` and `eval \"$(scripts/emulators.sh env)\"`, then \
                 run the tests again from that shell."
            );
        }
    }
}

/// Run `scenario` on runtime `R` with a fresh [`Env`], at most 4 minutes;
/// the streams and tables it created are deleted afterwards, whether it
/// passed, failed or panicked.
pub fn run<R: TestRuntime>(scenario: impl AsyncFnOnce(&Env<R>) -> Result<()>) -> Result<()> {
    run_within::<R>(Duration::from_secs(240), scenario)
}

/// [`run`] with another time limit.
pub fn run_within<R: TestRuntime>(
    limit: Duration,
    scenario: impl AsyncFnOnce(&Env<R>) -> Result<()>,
) -> Result<()> {
    if std::env::var_os("RUST_LOG").is_some() {
        // kinesin's logs with the test's output (`--nocapture` shows them).
        let _ = tracing_subscriber::fmt()
            .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
            .with_test_writer()
            .try_init();
    }
    R::block_on(async {
        R::check_runtime().await;
        let env = Env::<R>::new().await;
        let deadline = env.runtime.now() + limit;
        let outcome = AssertUnwindSafe(with_deadline(&env.runtime, deadline, scenario(&env)))
            .catch_unwind()
            .await;
        env.cleanup().await;
        R::check_runtime().await;
        match outcome {
            Ok(Some(result)) => result,
            Ok(None) => bail!("{}: not done within {limit:?}", R::NAME),
            Err(panic) => std::panic::resume_unwind(panic),
        }
    })
}

/// One test's world on runtime `R`.
pub struct Env<R: TestRuntime> {
    /// The SDK configuration for the plain-HTTP emulators.
    pub sdk: SdkConfig,
    /// A Kinesis client from it.
    pub k: aws_sdk_kinesis::Client,
    /// The kinesin runtime (its timers serve the helpers' waits).
    pub runtime: R::Runtime,
    streams: Mutex<Vec<String>>,
    tables: Mutex<Vec<String>>,
    dirs: Mutex<Vec<std::path::PathBuf>>,
}

impl<R: TestRuntime> Env<R> {
    async fn new() -> Self {
        let sdk = R::sdk_config().await;
        Env {
            k: aws_sdk_kinesis::Client::new(&sdk),
            sdk,
            runtime: R::Runtime::default(),
            streams: Mutex::new(Vec::new()),
            tables: Mutex::new(Vec::new()),
            dirs: Mutex::new(Vec::new()),
        }
    }

    /// Delete every stream (with its EFO consumers), table and directory made here
    /// (the mock has a 500-shard limit for all streams together). Best
    /// effort: a leftover only uses emulator capacity.
    async fn cleanup(&self) {
        let streams = std::mem::take(&mut *self.streams.lock().expect("not poisoned"));
        for name in streams {
            let _ = self
                .timeout(
                    Duration::from_secs(20),
                    self.k
                        .delete_stream()
                        .stream_name(&name)
                        .enforce_consumer_deletion(true)
                        .send(),
                )
                .await;
        }
        let tables = std::mem::take(&mut *self.tables.lock().expect("not poisoned"));
        let ddb = aws_sdk_dynamodb::Client::new(&self.sdk);
        for name in tables {
            let _ = self
                .timeout(
                    Duration::from_secs(20),
                    ddb.delete_table().table_name(&name).send(),
                )
                .await;
        }
        for dir in std::mem::take(&mut *self.dirs.lock().expect("not poisoned")) {
            let _ = std::fs::remove_dir_all(dir);
        }
    }

    /// Wait `period` on the runtime under test.
    pub async fn sleep(&self, period: Duration) {
        sleep_until(&self.runtime, self.runtime.now() + period).await
    }

    /// `future`, or `None` after `limit` (timer of the runtime under test).
    pub async fn timeout<F: Future>(&self, limit: Duration, future: F) -> Option<F::Output> {
        with_deadline(&self.runtime, self.runtime.now() + limit, future).await
    }

    /// A fresh lease table name, deleted at the end of the test.
    pub fn table(&self) -> String {
        let name = unique("leases");
        self.tables.lock().expect("not poisoned").push(name.clone());
        name
    }

    /// A fresh local store directory, removed at the end of the test.
    pub fn temp_dir(&self) -> std::path::PathBuf {
        let dir = std::env::temp_dir().join(unique("store"));
        self.dirs.lock().expect("not poisoned").push(dir.clone());
        dir
    }

    /// Create a fresh stream (named after `prefix`), deleted at the end of
    /// the test, and wait until it is ACTIVE; returns its name and ARN.
    pub async fn create_stream(&self, prefix: &str, shards: i32) -> Result<(String, String)> {
        let name = unique(prefix);
        self.streams
            .lock()
            .expect("not poisoned")
            .push(name.clone());
        self.k
            .create_stream()
            .stream_name(&name)
            .shard_count(shards)
            .send()
            .await
            .with_context(|| format!("CreateStream {name}"))?;
        let arn = self.wait_active(&name).await?;
        Ok((name, arn))
    }

    /// Wait until the stream is ACTIVE; returns its ARN.
    pub async fn wait_active(&self, name: &str) -> Result<String> {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let out = self
                .k
                .describe_stream_summary()
                .stream_name(name)
                .send()
                .await?;
            let s = out.stream_description_summary.context("no summary")?;
            if s.stream_status == StreamStatus::Active {
                return Ok(s.stream_arn);
            }
            ensure!(
                Instant::now() < deadline,
                "stream {name} not ACTIVE after 30 s"
            );
            self.sleep(Duration::from_millis(100)).await;
        }
    }

    /// A Kinesis client on the emulator's TLS port (HTTP/2 through ALPN),
    /// on this runtime's HTTPS client trusting the emulator's CA.
    pub fn tls_kinesis(&self) -> Result<aws_sdk_kinesis::Client> {
        let endpoint = std::env::var("KINESIN_TLS_ENDPOINT").context(
            "KINESIN_TLS_ENDPOINT is not set: run `eval \"$(scripts/emulators.sh env)\"`",
        )?;
        let ca = std::env::var("KINESIN_TEST_CA")
            .context("KINESIN_TEST_CA is not set: run `eval \"$(scripts/emulators.sh env)\"`")?;
        let conf = aws_sdk_kinesis::config::Builder::from(&self.sdk)
            .endpoint_url(endpoint)
            .http_client(R::tls_http_client(&ca)?)
            .build();
        Ok(aws_sdk_kinesis::Client::from_conf(conf))
    }

    /// Put records `(partition key, data)`, in order per partition key.
    pub async fn put(&self, stream: &str, items: &[(String, Vec<u8>)]) -> Result<()> {
        for chunk in items.chunks(200) {
            // One at a time per chunk keeps per-key order even with retries.
            let mut pending: Vec<&(String, Vec<u8>)> = chunk.iter().collect();
            for _attempt in 0..20 {
                let entries = pending
                    .iter()
                    .map(|(pk, data)| {
                        PutRecordsRequestEntry::builder()
                            .partition_key(pk)
                            .data(Blob::new(data.clone()))
                            .build()
                            .expect("entry")
                    })
                    .collect::<Vec<_>>();
                let out = self
                    .k
                    .put_records()
                    .stream_name(stream)
                    .set_records(Some(entries))
                    .send()
                    .await
                    .with_context(|| format!("PutRecords {stream}"))?;
                if out.failed_record_count.unwrap_or(0) == 0 {
                    pending.clear();
                    break;
                }
                // Keep the failed ones (and everything after the first
                // failure, so order per key holds).
                let first_failed = out
                    .records
                    .iter()
                    .position(|r| r.error_code.is_some())
                    .unwrap_or(0);
                pending = pending.split_off(first_failed);
                self.sleep(Duration::from_millis(100)).await;
            }
            ensure!(pending.is_empty(), "PutRecords kept failing");
        }
        Ok(())
    }

    /// A consumer builder on the runtime under test.
    pub fn consumer_builder(&self) -> ConsumerBuilder<R::Runtime> {
        kinesin_aws::Consumer::<R::Runtime>::builder()
    }

    /// A builder with test timings: failover 3 s, rebalance 2 s, shard sync
    /// 2 s, commit 1 s, a DynamoDB table created on demand.
    pub fn builder(&self, stream: &str, table: &str, worker: &str) -> ConsumerBuilder<R::Runtime> {
        self.consumer_builder()
            .stream(stream)
            .lease_table(table)
            .create_lease_table(true)
            .worker_id(worker)
            .failover_time(Duration::from_secs(3))
            .rebalance_period(Duration::from_secs(2))
            .shard_sync_period(Duration::from_secs(2))
            .commit_period(Duration::from_secs(1))
            .shutdown_timeout(Duration::from_secs(5))
    }

    /// The lease rows of a stream in a table.
    pub async fn leases(&self, table: &str, stream_arn: &str) -> Result<Vec<LeaseRow>> {
        use kinesin_aws::LeaseStore;
        let store =
            kinesin_aws::DynamoLeaseStore::new(aws_sdk_dynamodb::Client::new(&self.sdk), table);
        Ok(store.read_leases(&StreamId::new(stream_arn)).await?.rows)
    }

    /// Take batches (acking each) until `want` distinct ids arrived or the
    /// timeout passed (an error); returns every record in delivery order.
    pub async fn take(
        &self,
        batches: &mut Batches,
        want: usize,
        timeout: Duration,
    ) -> Result<Vec<Got>> {
        let (got, complete) = self.collect(batches, want, timeout).await?;
        if !complete {
            bail!(
                "timed out after {timeout:?} with {} of {want} distinct records",
                ids(&got).len()
            );
        }
        Ok(got)
    }

    /// Take whatever arrives (acking) for `period`.
    pub async fn take_for(&self, batches: &mut Batches, period: Duration) -> Result<Vec<Got>> {
        Ok(self.collect(batches, usize::MAX, period).await?.0)
    }

    /// Take batches (acking each) until `want` distinct ids or the timeout;
    /// the flag says whether `want` was reached.
    async fn collect(
        &self,
        batches: &mut Batches,
        want: usize,
        timeout: Duration,
    ) -> Result<(Vec<Got>, bool)> {
        let deadline = self.runtime.now() + timeout;
        let mut got = Vec::new();
        let mut seen = BTreeSet::new();
        while seen.len() < want {
            let batch = match with_deadline(&self.runtime, deadline, batches.next()).await {
                None => return Ok((got, false)),
                Some(None) => bail!("batch stream ended with {} of {want}", seen.len()),
                Some(Some(b)) => b?,
            };
            for r in batch.records() {
                let id = id_of(r.data());
                seen.insert(id);
                got.push(Got {
                    id,
                    shard: batch.shard().shard.to_string(),
                    partition_key: r.partition_key().to_owned(),
                    sub: r.sub_sequence_number(),
                    token: batch.fencing_token(),
                });
            }
            batch.ack();
        }
        Ok((got, true))
    }
}

/// A name no other test (or earlier run) used.
pub fn unique(prefix: &str) -> String {
    static N: AtomicU64 = AtomicU64::new(0);
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or(0);
    format!(
        "kt-{prefix}-{}-{nanos}-{}",
        std::process::id(),
        N.fetch_add(1, Ordering::Relaxed)
    )
}

/// Records `id` in `ids`, payload `id=<n>`, partition key `pk<n % keys>`.
pub fn numbered(ids: std::ops::Range<u64>, keys: u64) -> Vec<(String, Vec<u8>)> {
    ids.map(|i| (format!("pk{}", i % keys), format!("id={i}").into_bytes()))
        .collect()
}

/// One delivered record, as the tests check it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Got {
    pub id: u64,
    pub shard: String,
    pub partition_key: String,
    pub sub: u32,
    pub token: u64,
}

pub fn id_of(data: &[u8]) -> u64 {
    std::str::from_utf8(data)
        .ok()
        .and_then(|s| s.strip_prefix("id="))
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("unexpected payload {data:?}"))
}

/// Distinct ids, sorted.
pub fn ids(got: &[Got]) -> Vec<u64> {
    got.iter()
        .map(|g| g.id)
        .collect::<BTreeSet<_>>()
        .into_iter()
        .collect()
}

/// Per shard, the ids in first-delivery order must increase for each
/// partition key (Kinesis keeps order per shard).
pub fn assert_ordered_per_key(got: &[Got]) {
    let mut last: BTreeMap<(String, String), u64> = BTreeMap::new();
    let mut first_seen = BTreeSet::new();
    for g in got {
        if !first_seen.insert(g.id) {
            continue;
        }
        let key = (g.shard.clone(), g.partition_key.clone());
        if let Some(prev) = last.get(&key) {
            assert!(
                g.id > *prev,
                "out of order on {key:?}: {} after {prev}",
                g.id
            );
        }
        last.insert(key, g.id);
    }
}

/// Leases held per worker id.
pub fn held_by_worker(rows: &[LeaseRow]) -> BTreeMap<String, usize> {
    let mut m = BTreeMap::new();
    for r in rows {
        if let Some(o) = &r.owner {
            *m.entry(o.worker.to_string()).or_insert(0) += 1;
        }
    }
    m
}

//! An HTTP client for the AWS SDK that needs no tokio runtime.
//!
//! Models: the SDK's own hyper client (`aws-smithy-http-client`), which
//! cannot be reused here because it hard-codes tokio's executor, timer and
//! `TcpStream`. This one is hyper 1.x (HTTP/1.1 and HTTP/2) with
//! hyper-util's connection pool, fed by our own connector: async-io TCP
//! streams ([`async_net`]), rustls through [`futures_rustls`] (ALPN `h2`
//! then `http/1.1`), [`smol_hyper`] to adapt futures-io streams and the
//! async-io timer to hyper's traits, and async-std tasks as hyper's
//! executor. It plugs into the SDK at its `http_client` seam.
//!
//! The rules it encodes:
//! - The SDK asks for a connector per operation
//!   ([`HttpClient::http_connector`]); connectors are cached per
//!   (connect timeout, read timeout), as the SDK's own client does, each
//!   with its own pool.
//! - The connect timeout covers DNS, TCP and the TLS handshake; the read
//!   timeout covers the request until the response head (a streaming body
//!   such as SubscribeToShard's event stream is not cut by it).
//! - Errors are classified for the SDK's retry policy as the SDK's own
//!   client does: timeouts as [`ConnectorError::timeout`], connection
//!   failures, resets and GOAWAY as [`ConnectorError::io`], the rest as
//!   [`ConnectorError::other`].
//! - An HTTP/2 server caps the streams open at once on one connection
//!   (`SETTINGS_MAX_CONCURRENT_STREAMS`); a SubscribeToShard call holds its
//!   stream for up to five minutes. Over TLS, requests to one origin are
//!   therefore spread over *lanes*: lane `i` is a pool holding at most one
//!   HTTP/2 connection per origin, and a request takes the first lane with
//!   fewer than [`HttpClientBuilder::h2_streams_per_connection`] streams in
//!   flight to that origin (a stream counts until its response body is
//!   finished or dropped). Plain `http://` goes to lane 0 (HTTP/1.1, whose
//!   pool opens a connection per concurrent request anyway).
//! - The SDK's connection poisoning works: a poisoned connection is not
//!   reused.
//!
//! Not supported: proxies (`HTTP(S)_PROXY` is ignored), h2c (plain-text
//! HTTP/2; `http://` always speaks HTTP/1.1), client certificates.

use std::collections::HashMap;
use std::error::Error as StdError;
use std::fmt;
use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use async_net::TcpStream;
use aws_smithy_runtime_api::client::connection::{CaptureSmithyConnection, ConnectionMetadata};
use aws_smithy_runtime_api::client::connector_metadata::ConnectorMetadata;
use aws_smithy_runtime_api::client::http::{
    HttpClient, HttpConnector, HttpConnectorFuture, HttpConnectorSettings, SharedHttpClient,
    SharedHttpConnector,
};
use aws_smithy_runtime_api::client::orchestrator::HttpRequest;
use aws_smithy_runtime_api::client::result::ConnectorError;
use aws_smithy_runtime_api::client::retries::ErrorKind;
use aws_smithy_runtime_api::client::runtime_components::RuntimeComponents;
use aws_smithy_runtime_api::http::Response as HttpResponse;
use aws_smithy_types::body::SdkBody;
use bytes::Bytes;
use futures_lite::io::{AsyncRead, AsyncWrite};
use futures_rustls::TlsConnector;
use http::uri::{Authority, Scheme};
use http::Uri;
use hyper_util::client::legacy::connect::{capture_connection, Connected, Connection};
use hyper_util::client::legacy::Client;
use rustls::ClientConfig;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, ServerName};
use smol_hyper::rt::{FuturesIo, SmolTimer};

type BoxError = Box<dyn StdError + Send + Sync>;

/// Streams a lane opens on one HTTP/2 connection before the next lane is
/// used: the minimum RFC 9113 (6.5.2) recommends servers allow.
pub const DEFAULT_H2_STREAMS_PER_CONNECTION: usize = 100;

/// How long an idle pooled connection is kept.
const POOL_IDLE_TIMEOUT: Duration = Duration::from_secs(90);

/// Why an [`AsyncStdHttpClient`] could not be built.
#[derive(Debug, thiserror::Error)]
pub enum HttpClientError {
    /// The PEM text given as an extra trust anchor did not parse.
    #[error(
        "cannot read CA certificates from PEM: {0}; give a PEM file with BEGIN CERTIFICATE blocks"
    )]
    Pem(#[from] rustls_pki_types::pem::Error),
    /// The PEM text held no certificate.
    #[error("no CA certificate in the PEM text; give a PEM file with BEGIN CERTIFICATE blocks")]
    NoCertificate,
    /// rustls refused a certificate as a trust anchor.
    #[error("rustls refused a CA certificate as trust anchor: {0}")]
    BadCertificate(#[source] rustls::Error),
    /// The TLS protocol versions could not be configured.
    #[error("cannot configure TLS: {0}")]
    Tls(#[source] rustls::Error),
    /// An extra CA file could not be read.
    #[error("cannot read the CA file {path}: {source}")]
    CaFile {
        /// The file named.
        path: std::path::PathBuf,
        /// Why.
        #[source]
        source: io::Error,
    },
}

/// Builds an [`AsyncStdHttpClient`]: trust anchors, TLS configuration,
/// HTTP/2 stream budget.
#[derive(Debug, Clone)]
pub struct HttpClientBuilder {
    extra_roots: Vec<CertificateDer<'static>>,
    tls_config: Option<Arc<ClientConfig>>,
    h2_streams_per_connection: usize,
}

impl Default for HttpClientBuilder {
    fn default() -> Self {
        Self {
            extra_roots: Vec::new(),
            tls_config: None,
            h2_streams_per_connection: DEFAULT_H2_STREAMS_PER_CONNECTION,
        }
    }
}

impl HttpClientBuilder {
    /// Trust the CA certificates in `pem` as well as the Mozilla roots
    /// (webpki-roots), e.g. a test CA or a corporate one.
    pub fn add_root_certificates_pem(mut self, pem: &[u8]) -> Result<Self, HttpClientError> {
        let before = self.extra_roots.len();
        for cert in CertificateDer::pem_slice_iter(pem) {
            self.extra_roots.push(cert?);
        }
        if self.extra_roots.len() == before {
            return Err(HttpClientError::NoCertificate);
        }
        Ok(self)
    }

    /// [`Self::add_root_certificates_pem`] from a file.
    pub fn add_root_certificates_pem_file(
        self,
        path: impl AsRef<std::path::Path>,
    ) -> Result<Self, HttpClientError> {
        let path = path.as_ref();
        let pem = std::fs::read(path).map_err(|source| HttpClientError::CaFile {
            path: path.to_owned(),
            source,
        })?;
        self.add_root_certificates_pem(&pem)
    }

    /// Use this rustls configuration as it is (trust anchors, crypto
    /// provider, client certificates), instead of the Mozilla roots plus
    /// the extra CAs. Its ALPN list is replaced by `h2`, `http/1.1`.
    pub fn tls_config(mut self, config: Arc<ClientConfig>) -> Self {
        self.tls_config = Some(config);
        self
    }

    /// HTTP/2 streams in flight on one connection before another connection
    /// to the same origin is opened (default
    /// [`DEFAULT_H2_STREAMS_PER_CONNECTION`]). Keep it at or below the
    /// server's `SETTINGS_MAX_CONCURRENT_STREAMS`: past it, hyper queues
    /// new streams until one ends.
    pub fn h2_streams_per_connection(mut self, streams: usize) -> Self {
        assert!(streams > 0, "h2_streams_per_connection must be at least 1");
        self.h2_streams_per_connection = streams;
        self
    }

    /// The client.
    pub fn build(self) -> Result<AsyncStdHttpClient, HttpClientError> {
        let mut tls = match self.tls_config {
            Some(config) => (*config).clone(),
            None => {
                let mut roots = rustls::RootCertStore {
                    roots: webpki_roots::TLS_SERVER_ROOTS.to_vec(),
                };
                for cert in self.extra_roots {
                    roots.add(cert).map_err(HttpClientError::BadCertificate)?;
                }
                // The provider is named, never taken from the process default:
                // with both `ring` and `aws-lc-rs` on (the tokio stack in the
                // same build), rustls cannot pick one by itself.
                ClientConfig::builder_with_provider(Arc::new(
                    rustls::crypto::ring::default_provider(),
                ))
                .with_safe_default_protocol_versions()
                .map_err(HttpClientError::Tls)?
                .with_root_certificates(roots)
                .with_no_client_auth()
            }
        };
        tls.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
        Ok(AsyncStdHttpClient {
            inner: Arc::new(ClientInner {
                tls: TlsConnector::from(Arc::new(tls)),
                opened: Arc::new(Opened::default()),
                h2_streams_per_connection: self.h2_streams_per_connection,
                connectors: Mutex::new(HashMap::new()),
            }),
        })
    }
}

/// The SDK's HTTP client on async-io: see the module doc. Cheap to clone
/// (clones share pools).
#[derive(Clone)]
pub struct AsyncStdHttpClient {
    inner: Arc<ClientInner>,
}

struct ClientInner {
    tls: TlsConnector,
    opened: Arc<Opened>,
    h2_streams_per_connection: usize,
    /// One connector (and pool) per timeout pair the SDK asked for.
    connectors: Mutex<HashMap<TimeoutKey, SharedHttpConnector>>,
}

/// Connections an [`AsyncStdHttpClient`] opened (pooled connections are
/// counted once, when opened).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct ConnectionStats {
    /// Connections speaking HTTP/1.1 (all plain `http://` ones, and TLS
    /// ones where the server did not choose `h2`).
    pub http1_opened: u64,
    /// TLS connections where ALPN chose HTTP/2.
    pub http2_opened: u64,
}

#[derive(Debug, Default)]
struct Opened {
    http1: AtomicU64,
    http2: AtomicU64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
struct TimeoutKey {
    connect: Option<Duration>,
    read: Option<Duration>,
}

impl fmt::Debug for AsyncStdHttpClient {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AsyncStdHttpClient")
            .field(
                "h2_streams_per_connection",
                &self.inner.h2_streams_per_connection,
            )
            .finish_non_exhaustive()
    }
}

impl AsyncStdHttpClient {
    /// A client trusting the Mozilla roots (webpki-roots), with the default
    /// HTTP/2 stream budget.
    pub fn new() -> Self {
        Self::builder()
            .build()
            .expect("the default TLS configuration is valid")
    }

    /// A builder, for extra trust anchors or an own rustls configuration.
    pub fn builder() -> HttpClientBuilder {
        HttpClientBuilder::default()
    }

    /// Connections this client opened so far, by protocol.
    pub fn connection_stats(&self) -> ConnectionStats {
        ConnectionStats {
            http1_opened: self.inner.opened.http1.load(Ordering::Relaxed),
            http2_opened: self.inner.opened.http2.load(Ordering::Relaxed),
        }
    }

    /// This client as the SDK's `http_client`.
    pub fn into_shared(self) -> SharedHttpClient {
        SharedHttpClient::new(self)
    }

    fn new_connector(&self, key: TimeoutKey) -> Connector {
        Connector {
            dial: Dial {
                tls: self.inner.tls.clone(),
                opened: self.inner.opened.clone(),
                connect_timeout: key.connect,
            },
            read_timeout: key.read,
            h2_streams_per_connection: self.inner.h2_streams_per_connection,
            lanes: Arc::new(Mutex::new(Lanes::default())),
        }
    }
}

impl Default for AsyncStdHttpClient {
    fn default() -> Self {
        Self::new()
    }
}

impl HttpClient for AsyncStdHttpClient {
    fn http_connector(
        &self,
        settings: &HttpConnectorSettings,
        _components: &RuntimeComponents,
    ) -> SharedHttpConnector {
        let key = TimeoutKey {
            connect: settings.connect_timeout(),
            read: settings.read_timeout(),
        };
        let mut connectors = self
            .inner
            .connectors
            .lock()
            .expect("connector cache poisoned");
        connectors
            .entry(key)
            .or_insert_with(|| SharedHttpConnector::new(self.new_connector(key)))
            .clone()
    }

    fn connector_metadata(&self) -> Option<ConnectorMetadata> {
        Some(ConnectorMetadata::new("kinesin-async-std-hyper", None))
    }
}

/// One connector: the pools (lanes) for one pair of timeouts.
#[derive(Clone)]
struct Connector {
    dial: Dial,
    read_timeout: Option<Duration>,
    h2_streams_per_connection: usize,
    lanes: Arc<Mutex<Lanes>>,
}

impl fmt::Debug for Connector {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Connector")
            .field("connect_timeout", &self.dial.connect_timeout)
            .field("read_timeout", &self.read_timeout)
            .finish_non_exhaustive()
    }
}

type Pool = Client<Dial, SdkBody>;

/// Lane `i` is `pools[i]`; `in_flight[origin][i]` counts the streams open
/// to `origin` on lane `i`.
#[derive(Default)]
struct Lanes {
    pools: Vec<Pool>,
    in_flight: HashMap<(Scheme, Authority), Vec<Arc<AtomicUsize>>>,
}

impl Connector {
    /// The lane for a request to `uri`: its index, its pool and, over TLS,
    /// the stream slot the request takes on it.
    fn pick_lane(&self, uri: &Uri) -> (usize, Pool, Option<StreamSlot>) {
        let mut lanes = self.lanes.lock().expect("lanes poisoned");
        let tls = uri.scheme() == Some(&Scheme::HTTPS);
        let origin = match (uri.scheme(), uri.authority()) {
            (Some(scheme), Some(authority)) if tls => Some((scheme.clone(), authority.clone())),
            _ => None,
        };
        let Some(origin) = origin else {
            if lanes.pools.is_empty() {
                let pool = self.new_pool();
                lanes.pools.push(pool);
            }
            return (0, lanes.pools[0].clone(), None);
        };
        let budget = self.h2_streams_per_connection;
        let counters = lanes.in_flight.entry(origin).or_default();
        let lane = match counters
            .iter()
            .position(|count| count.load(Ordering::Acquire) < budget)
        {
            Some(lane) => lane,
            None => {
                counters.push(Arc::new(AtomicUsize::new(0)));
                counters.len() - 1
            }
        };
        let counter = counters[lane].clone();
        counter.fetch_add(1, Ordering::AcqRel);
        while lanes.pools.len() <= lane {
            let pool = self.new_pool();
            lanes.pools.push(pool);
        }
        if lane > 0 {
            tracing::trace!(lane, "HTTP/2 stream budget full on earlier lanes");
        }
        (lane, lanes.pools[lane].clone(), Some(StreamSlot(counter)))
    }

    fn new_pool(&self) -> Pool {
        Client::builder(AsyncStdExecutor)
            .timer(SmolTimer::new())
            .pool_timer(SmolTimer::new())
            .pool_idle_timeout(POOL_IDLE_TIMEOUT)
            .build(self.dial.clone())
    }
}

impl HttpConnector for Connector {
    fn call(&self, request: HttpRequest) -> HttpConnectorFuture {
        let mut request = match request.try_into_http1x() {
            Ok(request) => request,
            Err(err) => return HttpConnectorFuture::ready(Err(ConnectorError::user(err.into()))),
        };
        let captured = capture_connection(&mut request);
        if let Some(capture) = request.extensions().get::<CaptureSmithyConnection>() {
            capture.set_connection_retriever(move || {
                captured.connection_metadata().as_ref()?;
                let captured = captured.clone();
                Some(
                    ConnectionMetadata::builder()
                        .proxied(false)
                        .poison_fn(move || {
                            if let Some(connected) = captured.connection_metadata().as_ref() {
                                connected.poison();
                            }
                        })
                        .build(),
                )
            });
        }
        let (_lane, pool, slot) = self.pick_lane(request.uri());
        let read_timeout = self.read_timeout;
        HttpConnectorFuture::new(async move {
            let response = with_timeout(read_timeout, pool.request(request)).await;
            match response {
                Err(elapsed) => Err(ConnectorError::timeout(Box::new(elapsed.read()))),
                Ok(Err(err)) => Err(classify(Box::new(err))),
                Ok(Ok(response)) => {
                    let response = response.map(|body| {
                        SdkBody::from_body_1_x(CountedBody {
                            inner: body,
                            _slot: slot,
                        })
                    });
                    HttpResponse::try_from(response)
                        .map_err(|err| ConnectorError::other(err.into(), None))
                }
            }
        })
    }
}

/// A stream counted against its lane's budget until dropped.
struct StreamSlot(Arc<AtomicUsize>);

impl Drop for StreamSlot {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::AcqRel);
    }
}

/// A response body holding its stream slot.
struct CountedBody {
    inner: hyper::body::Incoming,
    _slot: Option<StreamSlot>,
}

impl http_body::Body for CountedBody {
    type Data = Bytes;
    type Error = hyper::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<http_body::Frame<Bytes>, hyper::Error>>> {
        Pin::new(&mut self.inner).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        self.inner.size_hint()
    }
}

/// hyper's executor: detached async-std tasks.
#[derive(Debug, Clone, Copy)]
struct AsyncStdExecutor;

impl<F> hyper::rt::Executor<F> for AsyncStdExecutor
where
    F: Future + Send + 'static,
    F::Output: Send + 'static,
{
    fn execute(&self, future: F) {
        async_std::task::spawn(future);
    }
}

/// A timeout that elapsed: which one and after how long.
#[derive(Debug)]
pub struct TimeoutError {
    what: &'static str,
    after: Duration,
}

impl fmt::Display for TimeoutError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "HTTP {} timeout after {:?}", self.what, self.after)
    }
}

impl StdError for TimeoutError {}

struct Elapsed(Duration);

impl Elapsed {
    fn read(self) -> TimeoutError {
        TimeoutError {
            what: "read",
            after: self.0,
        }
    }
    fn connect(self) -> TimeoutError {
        TimeoutError {
            what: "connect",
            after: self.0,
        }
    }
}

/// `future`, or [`Elapsed`] once `timeout` passed (no limit on `None`).
async fn with_timeout<F: Future>(
    timeout: Option<Duration>,
    future: F,
) -> Result<F::Output, Elapsed> {
    let Some(timeout) = timeout else {
        return Ok(future.await);
    };
    futures_lite::future::or(async { Ok(future.await) }, async {
        async_io::Timer::after(timeout).await;
        Err(Elapsed(timeout))
    })
    .await
}

/// The SDK's classification of a failed request (as its own hyper client
/// does), so retries behave the same.
fn classify(err: BoxError) -> ConnectorError {
    if find_source::<TimeoutError>(err.as_ref()).is_some() {
        return ConnectorError::timeout(err);
    }
    if let Some(hyper_err) = find_source::<hyper::Error>(err.as_ref()) {
        if hyper_err.is_timeout() {
            return ConnectorError::timeout(err);
        }
        if hyper_err.is_user() {
            return ConnectorError::user(err);
        }
        if hyper_err.is_closed()
            || hyper_err.is_canceled()
            || find_source::<io::Error>(hyper_err).is_some()
        {
            return ConnectorError::io(err);
        }
        if hyper_err.is_incomplete_message() {
            return ConnectorError::other(err, Some(ErrorKind::TransientError));
        }
        if let Some(h2_err) = find_source::<h2::Error>(hyper_err) {
            if h2_err.is_go_away()
                || (h2_err.is_reset() && h2_err.reason() == Some(h2::Reason::REFUSED_STREAM))
            {
                return ConnectorError::io(err);
            }
        }
        return ConnectorError::other(err, None);
    }
    if let Some(pool_err) = find_source::<hyper_util::client::legacy::Error>(err.as_ref()) {
        if pool_err.is_connect() || find_source::<io::Error>(pool_err).is_some() {
            return ConnectorError::io(err);
        }
    }
    ConnectorError::other(err, None)
}

fn find_source<'a, E: StdError + 'static>(err: &'a (dyn StdError + 'static)) -> Option<&'a E> {
    let mut next = Some(err);
    while let Some(err) = next {
        if let Some(found) = err.downcast_ref::<E>() {
            return Some(found);
        }
        next = err.source();
    }
    None
}

/// Opens connections for the pool: DNS, TCP, TLS with ALPN, all under the
/// connect timeout.
#[derive(Clone)]
struct Dial {
    tls: TlsConnector,
    opened: Arc<Opened>,
    connect_timeout: Option<Duration>,
}

impl tower_service::Service<Uri> for Dial {
    type Response = Io;
    type Error = BoxError;
    type Future = Pin<Box<dyn Future<Output = Result<Io, BoxError>> + Send>>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), BoxError>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, uri: Uri) -> Self::Future {
        let dial = self.clone();
        Box::pin(async move {
            match with_timeout(dial.connect_timeout, dial.connect(uri)).await {
                Ok(result) => result,
                Err(elapsed) => Err(Box::new(elapsed.connect()) as BoxError),
            }
        })
    }
}

impl Dial {
    async fn connect(self, uri: Uri) -> Result<Io, BoxError> {
        let tls = match uri.scheme_str() {
            Some("https") => true,
            Some("http") => false,
            other => {
                return Err(format!("unsupported URI scheme {other:?} in {uri}").into());
            }
        };
        let host = uri
            .host()
            .ok_or_else(|| format!("no host in URI {uri}"))?
            .trim_start_matches('[')
            .trim_end_matches(']')
            .to_owned();
        let port = uri.port_u16().unwrap_or(if tls { 443 } else { 80 });
        let tcp = connect_tcp(&host, port).await?;
        let remote = tcp.peer_addr().ok();
        let local = tcp.local_addr().ok();
        let transport = if tls {
            let server_name = ServerName::try_from(host.clone())
                .map_err(|err| format!("invalid TLS server name {host:?}: {err}"))?;
            let stream = self.tls.connect(server_name, tcp).await?;
            Transport::Tls(Box::new(stream))
        } else {
            Transport::Plain(tcp)
        };
        let h2 = match &transport {
            Transport::Tls(stream) => stream.get_ref().1.alpn_protocol() == Some(b"h2"),
            Transport::Plain(_) => false,
        };
        let opened = if h2 {
            &self.opened.http2
        } else {
            &self.opened.http1
        };
        opened.fetch_add(1, Ordering::Relaxed);
        tracing::debug!(%host, port, tls, h2, ?remote, ?local, "connected");
        Ok(Io {
            inner: FuturesIo::new(transport),
            h2,
        })
    }
}

/// Resolve `host` (on a blocking thread, via [`async_net::resolve`]) and
/// connect to its addresses in turn.
async fn connect_tcp(host: &str, port: u16) -> io::Result<TcpStream> {
    let addrs: Vec<SocketAddr> = async_net::resolve((host, port)).await?;
    let mut last_err = None;
    for addr in addrs {
        match TcpStream::connect(addr).await {
            Ok(stream) => {
                stream.set_nodelay(true)?;
                return Ok(stream);
            }
            Err(err) => last_err = Some(err),
        }
    }
    Err(last_err.unwrap_or_else(|| {
        io::Error::new(
            io::ErrorKind::NotFound,
            format!("{host}:{port} resolved to no address"),
        )
    }))
}

/// A connection: TCP, or TLS over TCP.
enum Transport {
    Plain(TcpStream),
    Tls(Box<futures_rustls::client::TlsStream<TcpStream>>),
}

impl AsyncRead for Transport {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut [u8],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            Transport::Plain(s) => Pin::new(s).poll_read(cx, buf),
            Transport::Tls(s) => Pin::new(s).poll_read(cx, buf),
        }
    }
}

impl AsyncWrite for Transport {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            Transport::Plain(s) => Pin::new(s).poll_write(cx, buf),
            Transport::Tls(s) => Pin::new(s).poll_write(cx, buf),
        }
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            Transport::Plain(s) => Pin::new(s).poll_write_vectored(cx, bufs),
            Transport::Tls(s) => Pin::new(s).poll_write_vectored(cx, bufs),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Transport::Plain(s) => Pin::new(s).poll_flush(cx),
            Transport::Tls(s) => Pin::new(s).poll_flush(cx),
        }
    }

    fn poll_close(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Transport::Plain(s) => Pin::new(s).poll_close(cx),
            Transport::Tls(s) => Pin::new(s).poll_close(cx),
        }
    }
}

/// What the pool holds: hyper's I/O traits over a [`Transport`], and
/// whether ALPN chose HTTP/2 (so the pool shares the connection).
struct Io {
    inner: FuturesIo<Transport>,
    h2: bool,
}

impl Connection for Io {
    fn connected(&self) -> Connected {
        let connected = Connected::new();
        if self.h2 {
            connected.negotiated_h2()
        } else {
            connected
        }
    }
}

impl hyper::rt::Read for Io {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: hyper::rt::ReadBufCursor<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}

impl hyper::rt::Write for Io {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn connector(h2_streams: usize) -> Connector {
        AsyncStdHttpClient::builder()
            .h2_streams_per_connection(h2_streams)
            .build()
            .expect("client builds")
            .new_connector(TimeoutKey {
                connect: None,
                read: None,
            })
    }

    fn lane(connector: &Connector, uri: &str) -> (usize, Option<StreamSlot>) {
        let (lane, _pool, slot) = connector.pick_lane(&uri.parse().expect("valid URI"));
        (lane, slot)
    }

    #[test]
    fn tls_requests_take_the_first_lane_with_stream_budget_left() {
        let connector = connector(2);
        let kinesis = "https://kinesis.us-east-1.amazonaws.com/";
        let (lane_a, slot_a) = lane(&connector, kinesis);
        let (lane_b, _slot_b) = lane(&connector, kinesis);
        let (lane_c, _slot_c) = lane(&connector, kinesis);
        assert_eq!((lane_a, lane_b, lane_c), (0, 0, 1));
        // Another origin has its own budget on the same lanes.
        assert_eq!(
            lane(&connector, "https://dynamodb.us-east-1.amazonaws.com/").0,
            0
        );
        // A finished stream frees its slot on lane 0.
        drop(slot_a);
        assert_eq!(lane(&connector, kinesis).0, 0);
        assert_eq!(connector.lanes.lock().unwrap().pools.len(), 2);
    }

    #[test]
    fn plain_http_always_takes_lane_zero_without_a_slot() {
        let connector = connector(1);
        let slots: Vec<_> = (0..3)
            .map(|_| lane(&connector, "http://127.0.0.1:4568/"))
            .collect();
        assert!(slots
            .iter()
            .all(|(lane, slot)| *lane == 0 && slot.is_none()));
    }

    #[test]
    fn pem_without_certificate_is_refused() {
        let err = AsyncStdHttpClient::builder()
            .add_root_certificates_pem(b"not a certificate")
            .expect_err("no certificate in it");
        assert!(matches!(err, HttpClientError::NoCertificate), "{err}");
    }
}

//! The HTTP client's own behaviour against a small local HTTP/1.1 server
//! (no emulator needed): connection reuse, the read timeout, the connect
//! timeout (a TLS handshake that never completes), refused connections.
//! Errors must be classified for the SDK's retry policy as its own client
//! does. No tokio runtime anywhere.

mod common;

use std::convert::Infallible;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{bail, ensure, Result};
use aws_config::retry::RetryConfig;
use aws_config::timeout::TimeoutConfig;
use aws_sdk_dynamodb::config::{Credentials, Region};
use aws_sdk_dynamodb::error::SdkError;
use common::assert_no_tokio;
use http_body_util_free::full;
use kinesin_async_std::{config_loader, AsyncStdHttpClient};
use smol_hyper::rt::FuturesIo;

/// A DynamoDB endpoint answering ListTables after `delay`; counts the
/// connections it accepted.
struct FakeDynamo {
    url: String,
    connections: Arc<AtomicUsize>,
}

fn fake_dynamo(delay: Duration) -> FakeDynamo {
    let listener =
        async_io::block_on(async_net::TcpListener::bind("127.0.0.1:0")).expect("bind a local port");
    let url = format!("http://{}", listener.local_addr().expect("local addr"));
    let connections = Arc::new(AtomicUsize::new(0));
    let accepted = connections.clone();
    async_std::task::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            accepted.fetch_add(1, Ordering::SeqCst);
            async_std::task::spawn(async move {
                let service = hyper::service::service_fn(move |_request| async move {
                    async_io::Timer::after(delay).await;
                    Ok::<_, Infallible>(
                        hyper::Response::builder()
                            .header("content-type", "application/x-amz-json-1.0")
                            .body(full(r#"{"TableNames":[]}"#))
                            .expect("valid response"),
                    )
                });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(FuturesIo::new(stream), service)
                    .await;
            });
        }
    });
    FakeDynamo { url, connections }
}

/// A DynamoDB client for `url` with explicit region and credentials (no
/// environment), retries off, the given timeouts.
async fn client(url: &str, timeouts: TimeoutConfig) -> aws_sdk_dynamodb::Client {
    let sdk = config_loader(AsyncStdHttpClient::new())
        .region(Region::new("us-east-1"))
        .credentials_provider(Credentials::new("AKID", "secret", None, None, "test"))
        .endpoint_url(url)
        .retry_config(RetryConfig::disabled())
        .timeout_config(timeouts)
        .load()
        .await;
    aws_sdk_dynamodb::Client::new(&sdk)
}

#[test]
fn sequential_http1_requests_reuse_pooled_connections() -> Result<()> {
    async_std::task::block_on(async {
        assert_no_tokio();
        let server = fake_dynamo(Duration::ZERO);
        let ddb = client(&server.url, TimeoutConfig::builder().build()).await;
        for _ in 0..10 {
            let out = ddb.list_tables().send().await?;
            ensure!(out.table_names().is_empty());
            // hyper-util returns a finished HTTP/1.1 connection to the pool
            // from a task; a request sent before that task ran races a new
            // connection against it. A pause lets the pool catch up.
            async_io::Timer::after(Duration::from_millis(20)).await;
        }
        let connections = server.connections.load(Ordering::SeqCst);
        ensure!(
            connections <= 3,
            "{connections} connections for 10 sequential requests: no reuse"
        );
        Ok(())
    })
}

#[test]
fn read_timeout_is_a_timeout_error() -> Result<()> {
    async_std::task::block_on(async {
        assert_no_tokio();
        let server = fake_dynamo(Duration::from_secs(30));
        let ddb = client(
            &server.url,
            TimeoutConfig::builder()
                .read_timeout(Duration::from_millis(200))
                .build(),
        )
        .await;
        let started = std::time::Instant::now();
        match ddb.list_tables().send().await {
            Err(SdkError::DispatchFailure(failure)) if failure.is_timeout() => {}
            other => bail!("expected a timeout dispatch failure, got {other:?}"),
        }
        ensure!(started.elapsed() < Duration::from_secs(10));
        Ok(())
    })
}

#[test]
fn stalled_tls_handshake_hits_the_connect_timeout() -> Result<()> {
    async_std::task::block_on(async {
        assert_no_tokio();
        // Accepts TCP, never answers the ClientHello.
        let listener = async_net::TcpListener::bind("127.0.0.1:0").await?;
        let port = listener.local_addr()?.port();
        async_std::task::spawn(async move {
            let mut held = Vec::new();
            while let Ok((stream, _)) = listener.accept().await {
                held.push(stream);
            }
        });
        let ddb = client(
            &format!("https://localhost:{port}"),
            TimeoutConfig::builder()
                .connect_timeout(Duration::from_millis(200))
                .build(),
        )
        .await;
        match ddb.list_tables().send().await {
            Err(SdkError::DispatchFailure(failure)) if failure.is_timeout() => Ok(()),
            other => bail!("expected a timeout dispatch failure, got {other:?}"),
        }
    })
}

#[test]
fn refused_connection_is_an_io_error() -> Result<()> {
    async_std::task::block_on(async {
        assert_no_tokio();
        let port = {
            let listener = async_net::TcpListener::bind("127.0.0.1:0").await?;
            listener.local_addr()?.port()
        };
        let ddb = client(
            &format!("http://127.0.0.1:{port}"),
            TimeoutConfig::builder().build(),
        )
        .await;
        match ddb.list_tables().send().await {
            Err(SdkError::DispatchFailure(failure)) if failure.is_io() => Ok(()),
            other => bail!("expected an io dispatch failure, got {other:?}"),
        }
    })
}

/// A one-chunk response body, without pulling in http-body-util.
mod http_body_util_free {
    use std::convert::Infallible;
    use std::pin::Pin;
    use std::task::{Context, Poll};

    use bytes::Bytes;
    use http_body::{Body, Frame};

    pub struct Full(Option<Bytes>);

    pub fn full(text: &'static str) -> Full {
        Full(Some(Bytes::from_static(text.as_bytes())))
    }

    impl Body for Full {
        type Data = Bytes;
        type Error = Infallible;

        fn poll_frame(
            mut self: Pin<&mut Self>,
            _cx: &mut Context<'_>,
        ) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
            Poll::Ready(self.0.take().map(|data| Ok(Frame::data(data))))
        }
    }
}
